"""Typed configuration: dataclass sections, YAML composition, overrides and validation.

Exports are resolved lazily: each section's dataclass imports ``sa_train.config.fields`` from its
own module, and the schema imports those modules, so an eager import here would be circular.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConfigError": "sa_train.config.fields",
    "param": "sa_train.config.fields",
    "section": "sa_train.config.fields",
    "ExperimentConfig": "sa_train.config.schema",
    "ModelConfig": "sa_train.config.schema",
    "compose": "sa_train.config.loader",
    "from_yaml": "sa_train.config.loader",
    "load_config": "sa_train.config.loader",
    "to_flat_dict": "sa_train.config.loader",
    "to_yaml": "sa_train.config.loader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sa_train.config' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
