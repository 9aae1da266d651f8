"""The 1D U-Net denoiser with self- and cross-attention, and its attention backends.

    from sa_train.models.unet import UNet1D, attention

The names are resolved lazily: the config loader imports ``sa_train.models.unet.config`` (and so
this package) without needing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "UNet1D": "sa_train.models.unet.unet",
    "attention": "sa_train.models.unet.attention",
    "resolve_backend": "sa_train.models.unet.attention",
    "xformers_available": "sa_train.models.unet.attention",
    "UNetConfig": "sa_train.models.unet.config",
    "ATTENTION_BACKENDS": "sa_train.models.unet.config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
