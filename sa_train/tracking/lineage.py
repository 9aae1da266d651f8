"""Where a model came from, as tags of its registered version: identities, data, code and run.

The data manifest hash names the training data without copying it: a SHA-256 over each source in
``data.sources`` (and ``data.latents``) in order. A manifest file (JSONL, CSV, Parquet) counts by
its bytes; a folder counts by its listing, every file's relative path and size (audio, sidecars,
shards), which changes when a file is added, removed, renamed or rewritten with another length.
Remote sources are hashed through pyarrow.fs the same way (one recursive listing, no downloads of
audio).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Mapping, Optional

logger = logging.getLogger(__name__)

UNREADABLE = "unreadable"


def lineage_tags(meta: Mapping[str, Any], cfg, autoencoder_meta: Optional[Mapping[str, Any]],
                 source_commit: Optional[str], run_id: str) -> dict[str, str]:
    """The lineage tags of an exported model (``meta``: its meta.json; ``cfg``: its config)."""
    from sa_train.tracking.code_version import UNKNOWN
    from sa_train.tracking.mlflow_model import (TAG_AUTOENCODER, TAG_COMMIT, TAG_DATA, TAG_IDENTITY,
                                                TAG_SOURCE_RUN, TAG_STEP)

    commit = source_commit if source_commit and source_commit != UNKNOWN else meta.get("git_commit") or UNKNOWN
    return {
        TAG_IDENTITY: str(meta["identity"]),
        TAG_AUTOENCODER: str(autoencoder_meta["identity"]) if autoencoder_meta else "none (waveform model)",
        TAG_DATA: data_manifest_hash(cfg.data),
        TAG_COMMIT: commit,
        TAG_SOURCE_RUN: run_id,
        TAG_STEP: str(meta.get("step", "")),
    }


def data_manifest_hash(data_cfg) -> str:
    """SHA-256 (hex) over the training data's sources, or "unreadable: <reason>" when one of them
    cannot be read from here (the tag then says so instead of naming other data)."""
    locations = [*data_cfg.sources, *([data_cfg.latents] if data_cfg.latents else [])]
    digest = hashlib.sha256()
    try:
        for location in locations:
            digest.update(f"source {location}\n".encode())
            _hash_location(str(location), digest)
    except (OSError, ValueError) as err:
        logger.warning("the data manifest hash cannot be computed here (%s); the tag says %r", err, UNREADABLE)
        return f"{UNREADABLE}: {err}"[:250]
    return digest.hexdigest()


def _hash_location(location: str, digest) -> None:
    import pyarrow.fs

    if "://" in location:
        fs, path = pyarrow.fs.FileSystem.from_uri(location)
    else:
        fs, path = pyarrow.fs.LocalFileSystem(), location
    info = fs.get_file_info(path)
    if info.type == pyarrow.fs.FileType.File:
        with fs.open_input_stream(path) as stream:
            while block := stream.read(1 << 24):
                digest.update(block)
        return
    if info.type != pyarrow.fs.FileType.Directory:
        raise ValueError(f"data source {location} does not exist")
    root = path.rstrip("/")
    listing = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
    for entry in sorted((e for e in listing if e.type == pyarrow.fs.FileType.File), key=lambda e: e.path):
        digest.update(f"{entry.path[len(root):].lstrip('/')}\t{entry.size}\n".encode())
