"""Tiny randomly initialised models written as training writes them (a checkpoint folder) and
exported with sa_train.export, so tests run the real export, logging and loading paths."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from safetensors.torch import save_file

from sa_train.config import load_config, to_yaml
from sa_train.export import build_model, export_checkpoint
from sa_train.training.checkpoint import TrainState

WINDOW = 32768  # samples: 0.74 s at 44.1 kHz, 32 latent frames of the tiny VAE


def write_checkpoint(run_dir: Path, cfg, step: int = 2, mlflow_run_id: Optional[str] = None) -> Path:
    """One complete single-rank checkpoint of a randomly initialised model (no ZeRO shards)."""
    state = TrainState(step=step, stage=cfg.training.stage, mlflow_run_id=mlflow_run_id, world_size=1, engines=[])
    directory = Path(run_dir) / f"checkpoint_{step:06d}"
    (directory / "rng").mkdir(parents=True)
    model = build_model(cfg, cfg.training.stage)
    save_file({k: v.contiguous().clone() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
    save_file({"torch": __import__("torch").zeros(1)}, str(directory / "rng" / "rank0.safetensors"))
    (directory / "config.yaml").write_text(to_yaml(cfg))
    (directory / "state.json").write_text(json.dumps(asdict(state), indent=2))
    return directory


def tiny_exports(root: Path, data_source: Path, mlflow_run_id: Optional[str] = None) -> tuple[Path, Path]:
    """(exported autoencoder, exported diffusion model that decodes with it) under ``root``."""
    root = Path(root)
    ae_cfg = load_config(None, ["training.stage=autoencoder", f"data.window_samples={WINDOW}",
                                f"data.sources=[{data_source}]"])
    vae = export_checkpoint(write_checkpoint(root / "runs" / "vae", ae_cfg), root / "exported" / "vae")
    cfg = load_config(None, [f"data.window_samples={WINDOW}", f"model.autoencoder.pretrained={vae}",
                             f"data.sources=[{data_source}]", "model.sampling.steps=2"])
    diffusion = export_checkpoint(write_checkpoint(root / "runs" / "diffusion", cfg, mlflow_run_id=mlflow_run_id),
                                  root / "exported" / "diffusion")
    return Path(vae), Path(diffusion)


def write_manifest(path: Path, rows: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"path": f"clip_{i}.wav", "caption": f"tone {i}"}) + "\n" for i in range(rows)))
    return path
