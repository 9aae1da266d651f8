"""Reference statistics: the Gaussian of the reference embeddings (FD) and the reference class
probabilities per prompt (KL), computed once and cached.

Cache files (npz) live in ``cache_dir`` and are keyed by the embedder's (or tagger's) name and
settings and by a hash of the reference folder's content (every file's bytes, relative path and
prompt), so changing any of them computes fresh statistics and nothing stale is ever reused.

A stats file (``--reference stats.npz``) is such a cache file copied anywhere: it carries the
embedder's identity, which must match the embedder in use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from sa_train.evaluation.audio import ClipEntry, list_clips, load_audio
from sa_train.evaluation.embedders import AudioEmbedder, Tagger
from sa_train.evaluation.metrics import gaussian_stats
from sa_train.evaluation.progress import progress

logger = logging.getLogger(__name__)

STATS_FORMAT_VERSION = 1
_DURATION_SUFFIX = re.compile(r",?\s*\d+(?:\.\d+)?\s*seconds?\s*$")


def default_cache_dir() -> str:
    """``$SA_TRAIN_CACHE/reference_stats``, by default under ``~/.cache/sa_train``."""
    root = os.environ.get("SA_TRAIN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sa_train")
    return os.path.join(root, "reference_stats")


def prompt_key(prompt: str) -> str:
    """Prompts match for KL up to case, spacing and a trailing ", 2.31 seconds" (the synthetic
    captions state the file's duration, which a generation request may change)."""
    text = " ".join(prompt.lower().split())
    return _DURATION_SUFFIX.sub("", text).strip()


def identity(model: Any) -> dict[str, Any]:
    """What identifies an embedder or tagger in a cache key: its name and settings."""
    return {"name": model.name, "settings": dict(model.settings)}


def folder_content_hash(entries: list[ClipEntry], root: str) -> str:
    """sha256 over every clip's relative path, prompt and file bytes (blake2b)."""
    outer = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: e.path):
        inner = hashlib.blake2b(digest_size=16)
        with open(entry.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                inner.update(block)
        record = [os.path.relpath(entry.path, root), entry.prompt, inner.hexdigest()]
        outer.update(json.dumps(record).encode() + b"\n")
    return outer.hexdigest()


@dataclass
class ReferenceStats:
    """Gaussian statistics of reference embeddings: ``mu: (dim,)``, ``sigma: (dim, dim)``."""

    mu: np.ndarray
    sigma: np.ndarray
    num_frames: int
    num_files: int
    embedder: dict[str, Any]  # identity(): name and settings
    source: str  # the folder or file the statistics came from


def _cache_file(cache_dir: str, kind: str, model_identity: dict, content_hash: str) -> str:
    key = hashlib.sha256(json.dumps([kind, model_identity, content_hash], sort_keys=True).encode()).hexdigest()
    return os.path.join(cache_dir, f"{kind}_{model_identity['name']}_{key[:20]}.npz")


def _write_npz_atomically(path: str, **arrays: Any) -> None:
    # Trials of a sweep may compute the same reference at once: write aside, then rename.
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_stats(path: str, stats: ReferenceStats, content_hash: str = "") -> str:
    meta = {"format_version": STATS_FORMAT_VERSION, "embedder": stats.embedder, "source": stats.source,
            "content_hash": content_hash, "num_frames": stats.num_frames, "num_files": stats.num_files}
    _write_npz_atomically(path, mu=stats.mu, sigma=stats.sigma, meta=np.array(json.dumps(meta, sort_keys=True)))
    return path


def load_stats_file(path: str, embedder: Optional[AudioEmbedder] = None) -> ReferenceStats:
    """Read a stats file; with ``embedder``, check that it was made by the same one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            mu, sigma, meta = data["mu"], data["sigma"], json.loads(str(data["meta"]))
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path!r} is not a reference stats file (npz with mu, sigma, meta): {err}") from None
    if meta.get("format_version") != STATS_FORMAT_VERSION:
        raise ValueError(f"{path!r} has stats format {meta.get('format_version')}; expected {STATS_FORMAT_VERSION}")
    if embedder is not None and meta["embedder"] != identity(embedder):
        raise ValueError(
            f"reference stats {path!r} were made by embedder {meta['embedder']}, but the evaluation uses "
            f"{identity(embedder)}; pass --embedder {meta['embedder']['name']} or recompute from a reference folder"
        )
    return ReferenceStats(mu, sigma, int(meta["num_frames"]), int(meta["num_files"]), meta["embedder"], path)


@dataclass
class ReferenceSet:
    """What the evaluation compares against: FD statistics and/or per-prompt probabilities."""

    stats: Optional[ReferenceStats] = None
    probabilities: Optional[dict[str, np.ndarray]] = None  # prompt_key -> (classes,)
    source: str = ""
    content_hash: str = ""


def _compute(entries: list[ClipEntry], embedder: Optional[AudioEmbedder], tagger: Optional[Tagger],
             show_progress: Optional[bool] = None):
    frames, sums, counts = [], {}, {}
    for entry in progress(entries, len(entries), "reference", show_progress):
        audio, sr = load_audio(entry.path)
        if embedder is not None:
            frames.append(embedder.embed(audio, sr))
        if tagger is not None and entry.prompt is not None:
            key = prompt_key(entry.prompt)
            sums[key] = sums.get(key, 0.0) + tagger.class_probabilities(audio, sr)
            counts[key] = counts.get(key, 0) + 1
    embeddings = np.concatenate(frames) if frames else None
    probabilities = {k: sums[k] / counts[k] for k in sums}
    return embeddings, probabilities


def load_reference(
    reference: str, embedder: Optional[AudioEmbedder], tagger: Optional[Tagger], cache_dir: Optional[str] = None,
    show_progress: Optional[bool] = None,
) -> ReferenceSet:
    """Reference statistics from a folder (computed or read from the cache) or a stats file.

    A stats file has no per-prompt probabilities, so KL needs a reference folder with prompts.
    ``show_progress``: a progress bar on stderr while the statistics are computed (None: on a terminal).
    """
    if os.path.isfile(reference):
        stats = load_stats_file(reference, embedder) if embedder is not None else None
        return ReferenceSet(stats=stats, source=reference)
    if not os.path.isdir(reference):
        raise ValueError(f"reference {reference!r} is neither a folder of audio nor a stats file (.npz)")
    cache_dir = cache_dir or default_cache_dir()
    entries = list_clips(reference)
    content_hash = folder_content_hash(entries, reference)
    result = ReferenceSet(source=os.path.abspath(reference), content_hash=content_hash)

    fd_path = _cache_file(cache_dir, "fd", identity(embedder), content_hash) if embedder is not None else None
    kl_path = _cache_file(cache_dir, "kl", identity(tagger), content_hash) if tagger is not None else None
    need_fd = fd_path is not None and not os.path.isfile(fd_path)
    need_kl = kl_path is not None and not os.path.isfile(kl_path)
    if need_fd or need_kl:
        logger.info("computing reference statistics of %d files in %s", len(entries), reference)
        embeddings, probabilities = _compute(entries, embedder if need_fd else None, tagger if need_kl else None,
                                            show_progress)
        if need_fd:
            mu, sigma = gaussian_stats(embeddings)
            stats = ReferenceStats(mu, sigma, len(embeddings), len(entries), identity(embedder), result.source)
            save_stats(fd_path, stats, content_hash)
        if need_kl:
            keys = sorted(probabilities)
            probs = np.stack([probabilities[k] for k in keys]) if keys else np.zeros((0, len(tagger.classes)))
            _write_npz_atomically(kl_path, prompts=np.array(keys, dtype=str), probabilities=probs,
                                  meta=np.array(json.dumps({"tagger": identity(tagger), "content_hash": content_hash})))
    if fd_path is not None:
        if not need_fd:
            logger.info("reference FD statistics from the cache: %s", fd_path)
        result.stats = load_stats_file(fd_path, embedder)
    if kl_path is not None:
        with np.load(kl_path, allow_pickle=False) as data:
            result.probabilities = {str(k): p for k, p in zip(data["prompts"], data["probabilities"])}
        if not result.probabilities:
            logger.warning("reference %s has no prompts (no manifest.jsonl): KL cannot be computed", reference)
    return result
