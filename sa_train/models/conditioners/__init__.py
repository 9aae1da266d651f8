"""Conditioners: the frozen text encoder, the timing embeddings and the CFG null conditioning.

    from sa_train.models.conditioners import Conditioner, Conditioning, build_text_encoder

Modules: ``config`` (ConditioningConfig), ``text`` (TextEncoder over CLAP / T5 checkpoints),
``embedded`` (the seeded byte-level encoder of the demo), ``timing`` (TimingEmbedding) and
``conditioner`` (Conditioner, Conditioning, CFG null and dropout). The names are resolved lazily:
the config loader imports ``sa_train.models.conditioners.config`` (and so this package) without
needing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Conditioner": "sa_train.models.conditioners.conditioner",
    "Conditioning": "sa_train.models.conditioners.conditioner",
    "build_conditioner": "sa_train.models.conditioners.conditioner",
    "TextEncoder": "sa_train.models.conditioners.text",
    "build_text_encoder": "sa_train.models.conditioners.text",
    "TimingEmbedding": "sa_train.models.conditioners.timing",
    "ConditioningConfig": "sa_train.models.conditioners.config",
    "TextEncoderConfig": "sa_train.models.conditioners.config",
    "TimingConfig": "sa_train.models.conditioners.config",
    "check_conditioning": "sa_train.models.conditioners.config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
