"""Helpers for declaring typed config fields with help text and allowed values.

Every config field in sa_train is declared with :func:`param`, which stores its meaning (and
unit) and its constraints in the dataclass field's metadata. The generic validator in
:mod:`sa_train.config.validate` reads that metadata, so a range or a set of choices is written
once, next to the field, and the error message it produces names the key, the value and what
is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Sequence


class ConfigError(ValueError):
    """A user-facing configuration mistake: the message names the key and what to do."""


def param(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] | None = None,
    min: float | None = None,
    max: float | None = None,
    min_exclusive: bool = False,
) -> Any:
    """Declare a config field.

    Args:
        default: the default value (lists and dicts are copied per instance).
        help: what the field means, with its unit.
        choices: the allowed values, if the field is an enumeration.
        min, max: inclusive numeric bounds (``min_exclusive`` makes the lower bound strict).
            For list fields the bounds apply to every element.
    """
    metadata = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "min": min,
        "max": max,
        "min_exclusive": min_exclusive,
    }
    if isinstance(default, (list, dict)):
        frozen = copy.deepcopy(default)
        return dataclasses.field(default_factory=lambda: copy.deepcopy(frozen), metadata=metadata)
    if dataclasses.is_dataclass(default):
        cls = type(default)
        return dataclasses.field(default_factory=cls, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def section(cls: type, help: str) -> Any:
    """Declare a nested config section (a dataclass instance built with its defaults)."""
    return dataclasses.field(default_factory=cls, metadata={"help": help})
