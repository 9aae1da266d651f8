"""Portable models: safetensors weights (raw and EMA) plus the resolved config, no DeepSpeed or Ray.

    <out>/config.yaml          the resolved experiment config
    <out>/model.safetensors    raw trained weights (fp32)
    <out>/ema.safetensors      EMA weights (when the run kept an EMA)
    <out>/meta.json            format version, stage, step, source checkpoint, identity, git commit,
                               the MLflow run that trained it

The source and the destination may be local folders or URIs (s3://, gs://, file://, through
pyarrow.fs): a remote run folder is listed once and only the files of the newest complete
checkpoint that an export needs are downloaded (not the ZeRO shards).

Loading builds the model from config.yaml and loads the weights strictly: a missing or unexpected
key is reported by name and refused unless ``allow_mismatch`` is set. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file
from torch import nn

from sa_train.config import ExperimentConfig, from_yaml
from sa_train.training.checkpoint import CONFIG_FILE, EMA_FILE, find_latest_checkpoint, read_state

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "sa_train.exported/1"
MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"


@dataclass
class ExportedModel:
    cfg: ExperimentConfig
    model: nn.Module
    meta: dict
    path: Path

    @property
    def identity(self) -> str:
        return self.meta["identity"]


def model_identity(weights_file: Path, config_yaml: str) -> str:
    """A short hash of the weights and config: what latent shards record about their autoencoder."""
    digest = hashlib.sha256(config_yaml.encode())
    with open(weights_file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def is_remote(location: str | Path) -> bool:
    """Whether a location is a URI that pyarrow.fs opens (s3://, gs://, ...); file:// counts as remote
    so that tests exercise the same path as object storage."""
    return "://" in str(location)


def export_checkpoint(source: str | Path, out: str | Path) -> str | Path:
    """Export the latest complete checkpoint under ``source`` (a run folder or a checkpoint; local or a
    URI) into ``out`` (a local folder or a URI); returns ``out``."""
    with tempfile.TemporaryDirectory(prefix="sa_train_export_") as tmp:
        if is_remote(source):
            checkpoint, label = _download_latest_checkpoint(str(source), Path(tmp) / "checkpoint")
        else:
            checkpoint = find_latest_checkpoint(Path(source))
            label = str(checkpoint)
        if not is_remote(out):
            return _write_export(checkpoint, label, Path(out))
        staged = _write_export(checkpoint, label, Path(tmp) / "exported")
        uri = upload_folder(staged, str(out))
        if not (staged / EMA_FILE).exists():
            _delete_if_present(f"{uri.rstrip('/')}/{EMA_FILE}")  # a stale EMA of an earlier export
        return uri


def _write_export(checkpoint: Path, label: str, out: Path) -> Path:
    from sa_train.tracking.code_version import git_commit

    state = read_state(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    config_yaml = (checkpoint / CONFIG_FILE).read_text()
    shutil.copyfile(checkpoint / MODEL_FILE, out / MODEL_FILE)
    if (checkpoint / EMA_FILE).exists():
        shutil.copyfile(checkpoint / EMA_FILE, out / EMA_FILE)
    elif (out / EMA_FILE).exists():
        (out / EMA_FILE).unlink()  # a stale EMA of an earlier export would be loaded instead
    (out / CONFIG_FILE).write_text(config_yaml)
    meta = {
        "format": EXPORT_FORMAT,
        "stage": state.stage,
        "step": state.step,
        "samples_seen": state.samples_seen,
        "source_checkpoint": label,
        "identity": model_identity(out / MODEL_FILE, config_yaml),
        "has_ema": (out / EMA_FILE).exists(),
        "mlflow_run_id": state.mlflow_run_id,
        # The code exporting it: at the end of training (the launcher), the code that trained it.
        "git_commit": git_commit(),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    logger.info("exported %s model of step %d from %s to %s", state.stage, state.step, label, out)
    return out


def _download_latest_checkpoint(uri: str, local: Path) -> tuple[Path, str]:
    """The newest complete checkpoint under a remote run folder (or a remote checkpoint), downloaded
    without its ZeRO shards: state.json, config.yaml and the safetensors weights. One listing."""
    import pyarrow.fs

    from sa_train.training.checkpoint import STATE_FILE, _parse_state, _shard_files

    try:
        fs, root = pyarrow.fs.FileSystem.from_uri(uri)
        root = root.rstrip("/")
        listing = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True))
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot list {uri}: {err}; check the URI and the credentials for it") from err
    files = {info.path for info in listing if info.type == pyarrow.fs.FileType.File}
    if not files:
        raise ValueError(f"{uri} holds no files (or cannot be listed); pass a run folder (storage.path/<run name>) "
                         "or one checkpoint folder, and check the name and your credentials for it")
    candidates = []
    for path in files:
        if path.rsplit("/", 1)[-1] != STATE_FILE:
            continue
        folder = path.rsplit("/", 1)[0]
        with fs.open_input_stream(path) as stream:
            state = _parse_state(json.loads(stream.read()), f"{uri.split('://')[0]}://{path}")
        needed = [MODEL_FILE, CONFIG_FILE, *[f"rng/rank{r}.safetensors" for r in range(state.world_size)]]
        for engine in state.engines:
            needed += [str(p) for p in _shard_files(Path(engine), state.tag(), state.world_size, state.zero_stage)]
        if all(f"{folder}/{name}" in files for name in needed):
            candidates.append((state.step, folder))
    if not candidates:
        raise ValueError(f"no complete checkpoint under {uri}; pass a run folder (storage.path/<run name>) or a "
                         "checkpoint folder that holds state.json, model.safetensors and config.yaml")
    folder = max(candidates)[1]
    local.mkdir(parents=True)
    for name in (STATE_FILE, CONFIG_FILE, MODEL_FILE, EMA_FILE):
        if f"{folder}/{name}" in files:
            _download(fs, f"{folder}/{name}", local / name)
    return local, f"{uri.split('://')[0]}://{folder}"


def _delete_if_present(uri: str) -> None:
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(uri)
    if fs.get_file_info(path).type == pyarrow.fs.FileType.File:
        fs.delete_file(path)


def _download(fs, remote: str, local: Path) -> None:
    with fs.open_input_stream(remote) as source, open(local, "wb") as target:
        while block := source.read(1 << 24):
            target.write(block)


def build_model(cfg: ExperimentConfig, stage: str) -> nn.Module:
    from sa_train.models.diffusion_model import DiffusionModel, build_autoencoder

    return build_autoencoder(cfg.model) if stage == "autoencoder" else DiffusionModel(cfg.model)


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: str, allow_mismatch: bool = False) -> None:
    """Load a state dict, naming every missing and unexpected key; refuse a mismatch unless allowed."""
    result = model.load_state_dict(weights, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing keys ({len(result.missing_keys)}): {', '.join(result.missing_keys[:10])}")
    if result.unexpected_keys:
        problems.append(f"unexpected keys ({len(result.unexpected_keys)}): {', '.join(result.unexpected_keys[:10])}")
    if problems:
        message = f"weights in {source} do not match the model built from its config: " + "; ".join(problems)
        if not allow_mismatch:
            raise ValueError(message + "; check that the folder and its config belong together (export again with "
                             "`sa-train export`), or pass --allow-mismatch to `sa-train generate` to load anyway "
                             "(missing weights keep their initial values)")
        logger.warning(message)


def _local_folder(path: str | Path) -> tuple[Path, Optional[tempfile.TemporaryDirectory]]:
    """A local folder for a path or a URI (s3://, gs://, file://: copied to a temporary folder)."""
    text = str(path)
    if not is_remote(text):
        return Path(text), None
    import pyarrow.fs

    try:
        fs, remote = pyarrow.fs.FileSystem.from_uri(text)
        found = fs.get_file_info(remote).type
    except (OSError, ValueError) as err:  # an unknown scheme, missing credentials, no such bucket
        raise ValueError(f"cannot open {text}: {err}; check the URI and the credentials for it") from err
    if found != pyarrow.fs.FileType.Directory:
        raise ValueError(f"{text} is not a folder there (nothing at that location); pass the folder written by "
                         "`sa-train export`")
    tmp = tempfile.TemporaryDirectory(prefix="sa_train_model_")
    pyarrow.fs.copy_files(remote, tmp.name, source_filesystem=fs)
    return Path(tmp.name), tmp


def upload_folder(local: str | Path, uri: str) -> str:
    """Copy a local folder to a remote URI (s3://, gs://, file://) through pyarrow; returns the URI.

    Files already there and not in ``local`` are left alone (object stores have no atomic folder
    replace); an export overwrites every file it writes."""
    import pyarrow.fs

    fs, remote = pyarrow.fs.FileSystem.from_uri(uri)
    fs.create_dir(remote, recursive=True)
    pyarrow.fs.copy_files(str(local), remote, destination_filesystem=fs)
    return uri


def load_exported(
    path: str | Path | None, weights: str = "ema", expect_stage: Optional[str] = None, allow_mismatch: bool = False
) -> ExportedModel:
    """Load an exported model (``weights``: 'ema' when present, else 'raw'; or 'raw')."""
    if path is None:
        raise ValueError("no exported model given: set model.autoencoder.pretrained to a folder written by "
                         "`sa-train export` (sa-train encode takes it as --autoencoder)")
    folder, tmp = _local_folder(path)
    try:
        meta_path = folder / META_FILE
        if not meta_path.exists():
            raise ValueError(f"{path} is not an exported sa_train model (no {META_FILE}); create one with sa-train export")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != EXPORT_FORMAT:
            raise ValueError(f"{path}: export format {meta.get('format')!r} is not {EXPORT_FORMAT!r}")
        if expect_stage and meta["stage"] != expect_stage:
            raise ValueError(f"{path} holds a {meta['stage']} model, but a {expect_stage} model is needed here")
        cfg = from_yaml((folder / CONFIG_FILE).read_text())
        model = build_model(cfg, meta["stage"])
        use_ema = weights == "ema" and (folder / EMA_FILE).exists()
        weights_file = folder / (EMA_FILE if use_ema else MODEL_FILE)
        load_weights(model, load_file(str(weights_file)), str(weights_file), allow_mismatch)
        model.eval()
        meta["weights"] = "ema" if use_ema else "raw"
        return ExportedModel(cfg=cfg, model=model, meta=meta, path=Path(str(path)))
    finally:
        if tmp is not None:
            tmp.cleanup()


def encoder_factory(path: str | Path):
    """``factory(device) -> encode_fn(audio (B, C, T)) -> latents`` for an exported autoencoder.

    Each Ray Data actor of ``sa-train encode`` calls the factory once, on its own device."""
    path = str(path)

    def factory(device: str):
        model = load_exported(path, expect_stage="autoencoder").model.to(device).eval()

        @torch.no_grad()
        def encode(audio: torch.Tensor) -> torch.Tensor:
            return model.encode(audio)

        return encode

    return factory
