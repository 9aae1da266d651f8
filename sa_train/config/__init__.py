"""Typed configuration: dataclass sections, YAML composition, overrides and validation."""

from sa_train.config.fields import ConfigError, param, section
from sa_train.config.loader import compose, from_yaml, load_config, to_flat_dict, to_yaml
from sa_train.config.schema import ExperimentConfig, ModelConfig

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "ModelConfig",
    "compose",
    "from_yaml",
    "load_config",
    "param",
    "section",
    "to_flat_dict",
    "to_yaml",
]
