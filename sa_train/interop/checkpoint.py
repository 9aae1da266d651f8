"""Reading stable-audio-tools checkpoints without unpickling code.

SAT writes three kinds of files:

    Lightning .ckpt     {"state_dict": {"diffusion.<model keys>", "diffusion_ema.ema_model.<model keys>", ...},
                         "global_step": N, ...} (autoencoders: "autoencoder." and "autoencoder_ema.ema_model.")
    unwrapped .ckpt     {"state_dict": {<model keys>}} (its unwrap_model.py)
    .safetensors        {<model keys>}

Model keys of a text-to-audio model put the VAE under ``pretransform.model.``, the U-Net under
``model.model.`` and each conditioner under ``conditioner.conditioners.<id>.``; an autoencoder's
keys start at ``encoder.`` / ``decoder.``.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

logger = logging.getLogger(__name__)

Weights = dict[str, torch.Tensor]

# (raw prefix, EMA prefix) of SAT's Lightning training wrappers.
TRAINING_WRAPPERS = (
    ("diffusion.", "diffusion_ema.ema_model."),
    ("autoencoder.", "autoencoder_ema.ema_model."),
)


@dataclass
class SATCheckpoint:
    """The model weights of a SAT checkpoint (raw, and EMA when the Lightning file kept one)."""

    path: Path
    raw: Weights
    ema: Optional[Weights]
    step: int


def _load_file(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds Python objects besides tensors, which are not loaded for safety ({err}). Unwrap it with "
            "stable-audio-tools' unwrap_model.py (or save its state_dict as .safetensors) and import that file"
        ) from None


def strip_prefix(weights: Weights, prefix: str) -> Weights:
    """The entries whose key starts with ``prefix``, with the prefix removed."""
    return {key[len(prefix):]: value for key, value in weights.items() if key.startswith(prefix)}


def read_sat_checkpoint(path: str | Path) -> SATCheckpoint:
    """Read ``path`` (.ckpt or .safetensors) into model-level weights, unwrapping Lightning files."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist (expected a stable-audio-tools .ckpt or .safetensors)")
    data = _load_file(path)
    step = 0
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        step = int(data.get("global_step", 0) or 0)
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{path} is not a state dict (a mapping of names to tensors) nor a checkpoint holding one")
    weights: Weights = {str(k): v for k, v in data.items()}
    for raw_prefix, ema_prefix in TRAINING_WRAPPERS:
        raw = strip_prefix(weights, raw_prefix)
        if raw:
            ema = strip_prefix(weights, ema_prefix) or None
            logger.info("%s: Lightning training checkpoint of step %d (%s)%s", path, step, raw_prefix.rstrip("."),
                        ", with EMA weights" if ema else "")
            return SATCheckpoint(path, raw, ema, step)
    return SATCheckpoint(path, weights, None, step)
