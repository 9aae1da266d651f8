"""Portable models: safetensors weights (raw and EMA) plus the resolved config, no DeepSpeed or Ray.

    <out>/config.yaml          the resolved experiment config
    <out>/model.safetensors    raw trained weights (fp32)
    <out>/ema.safetensors      EMA weights (when the run kept an EMA)
    <out>/meta.json            format version, stage, step, source checkpoint, identity

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


def export_checkpoint(source: str | Path, out: str | Path) -> Path:
    """Export the latest complete checkpoint under ``source`` (a run folder or a checkpoint) into ``out``."""
    checkpoint = find_latest_checkpoint(Path(source))
    state = read_state(checkpoint)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config_yaml = (checkpoint / CONFIG_FILE).read_text()
    shutil.copyfile(checkpoint / MODEL_FILE, out / MODEL_FILE)
    if (checkpoint / EMA_FILE).exists():
        shutil.copyfile(checkpoint / EMA_FILE, out / EMA_FILE)
    (out / CONFIG_FILE).write_text(config_yaml)
    meta = {
        "format": EXPORT_FORMAT,
        "stage": state.stage,
        "step": state.step,
        "samples_seen": state.samples_seen,
        "source_checkpoint": str(checkpoint),
        "identity": model_identity(out / MODEL_FILE, config_yaml),
        "has_ema": (out / EMA_FILE).exists(),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    logger.info("exported %s model of step %d from %s to %s", state.stage, state.step, checkpoint, out)
    return out


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
    """A local folder for a path or a remote URI (s3://, gs://: copied to a temporary folder)."""
    text = str(path)
    if "://" not in text or text.startswith("file://"):
        return Path(text.removeprefix("file://")), None
    import pyarrow.fs

    tmp = tempfile.TemporaryDirectory(prefix="sa_train_model_")
    fs, remote = pyarrow.fs.FileSystem.from_uri(text)
    pyarrow.fs.copy_files(remote, tmp.name, source_filesystem=fs)
    return Path(tmp.name), tmp


def upload_folder(local: str | Path, uri: str) -> str:
    """Copy a local folder to a remote URI (s3://, gs://, file://) through pyarrow; returns the URI."""
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
