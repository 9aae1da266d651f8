"""The search space: config keys and their values, as Tune sees them and as key=value overrides.

Tune samples an index for grid and choice dimensions (values may be whole mappings, e.g. a text
encoder's kind together with its name_or_path, which Tune should not try to interpret) and a number
for uniform and loguniform ones; :func:`trial_overrides` turns a trial's Tune config back into
overrides. Every value is loaded as a full experiment config before any trial starts
(:func:`check_trial_configs`), so a typo fails the sweep at once, not an hour into it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Sequence

import yaml

from sa_train.config.fields import ConfigError

DISCRETE = ("grid", "choice")
CONTINUOUS = ("uniform", "loguniform")
# The sweep sets these per trial (run name, storage, tracking): searching them would break its bookkeeping.
RESERVED_PREFIXES = ("tracking.", "storage.")
MAX_CHECKED_COMBINATIONS = 256
_PLAIN_UNSAFE = set(",[]{}#&*!|>'\"%@`: ")


def format_value(value: Any) -> str:
    """A value as it is written on the right of key=value (plain when YAML reads it back unchanged)."""
    if isinstance(value, str) and value and not (_PLAIN_UNSAFE & set(value)):
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value)


def _flatten(key: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, Mapping):
        return [pair for sub, inner in value.items() for pair in _flatten(f"{key}.{sub}", inner)]
    return [(key, value)]


@dataclass(frozen=True)
class SearchDimension:
    """One searched config key: a leaf (``model.conditioning.timing.kind``) or a section whose values
    are partial mappings of it (``model.conditioning.text_encoder: {kind: t5, name_or_path: ...}``)."""

    key: str
    kind: str  # grid | choice | uniform | loguniform
    values: tuple = ()  # grid / choice
    low: float = 0.0  # uniform / loguniform
    high: float = 0.0
    is_section: bool = False

    def tune_domain(self) -> Any:
        from ray import tune

        if self.kind == "grid":
            return tune.grid_search(list(range(len(self.values))))
        if self.kind == "choice":
            return tune.choice(list(range(len(self.values))))
        return (tune.uniform if self.kind == "uniform" else tune.loguniform)(self.low, self.high)

    def value(self, sampled: Any) -> Any:
        """The config value for what Tune sampled (an index for grid/choice)."""
        return self.values[int(sampled)] if self.kind in DISCRETE else float(sampled)

    def leaves(self, value: Any) -> list[tuple[str, Any]]:
        """(dotted key, value) pairs this value sets; a section's mapping is flattened."""
        return _flatten(self.key, value)

    def overrides(self, value: Any) -> list[str]:
        return [f"{key}={format_value(v)}" for key, v in self.leaves(value)]

    def candidates(self) -> tuple:
        """Values checked against the config schema before the sweep: all of them, or the bounds."""
        return self.values if self.kind in DISCRETE else (self.low, self.high)


def _schema_kind(key: str) -> str | None:
    """'section', 'leaf', or None when the key is not in the experiment config."""
    from sa_train.config.loader import _schema_field

    field = _schema_field(key)
    if field is None:
        return None
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else None
    return "section" if dataclasses.is_dataclass(default) else "leaf"


def parse_search_space(raw: Mapping[str, Any], origin: str) -> list[SearchDimension]:
    """The search_space mapping of a sweep file -> dimensions; raises ConfigError naming the key."""
    from sa_train.config.loader import suggest_key

    dims = []
    for key, spec in raw.items():
        where = f"{origin}: search_space['{key}']"
        kind_of_key = _schema_kind(key)
        if kind_of_key is None:
            hint = suggest_key(key)
            raise ConfigError(f"{where}: '{key}' is not a config key" + (f"; did you mean '{hint}'?" if hint else ""))
        if key.startswith(RESERVED_PREFIXES):
            raise ConfigError(f"{where}: tracking.* and storage.* are set by the sweep per trial and cannot be searched")
        if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in DISCRETE + CONTINUOUS:
            raise ConfigError(
                f"{where} must be one of {{grid: [...]}}, {{choice: [...]}}, {{uniform: [lo, hi]}}, "
                f"{{loguniform: [lo, hi]}}; got {spec!r}")
        kind, values = next(iter(spec.items()))
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"{where}.{kind} must be a non-empty list, got {values!r}")
        is_section = kind_of_key == "section"
        if kind in CONTINUOUS:
            if is_section:
                raise ConfigError(f"{where}: '{key}' is a section; search it with grid or choice of mappings")
            if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise ConfigError(f"{where}.{kind} must be [low, high] numbers, got {values!r}")
            low, high = float(values[0]), float(values[1])
            if not low < high or (kind == "loguniform" and low <= 0):
                raise ConfigError(f"{where}.{kind}=[{low}, {high}] needs low < high" +
                                  (" and low > 0" if kind == "loguniform" else ""))
            dims.append(SearchDimension(key, kind, low=low, high=high))
            continue
        if is_section and not all(isinstance(v, Mapping) and v for v in values):
            raise ConfigError(
                f"{where}: '{key}' is a section, so each {kind} value must be a mapping of its keys, "
                f"e.g. {{kind: t5, name_or_path: ...}}; got {values!r}")
        dims.append(SearchDimension(key, kind, tuple(_plain(v) for v in values), is_section=is_section))
    if not dims:
        raise ConfigError(f"{origin}: search_space is empty")
    return dims


def _plain(value: Any) -> Any:
    """OmegaConf containers -> dicts and lists (they are pickled to trials and written to reports)."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(value):
            return OmegaConf.to_container(value)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return value


def tune_param_space(dims: Sequence[SearchDimension]) -> dict[str, Any]:
    return {d.key: d.tune_domain() for d in dims}


def trial_values(dims: Sequence[SearchDimension], tune_config: Mapping[str, Any]) -> dict[str, Any]:
    """{searched key: value} of one trial."""
    return {d.key: d.value(tune_config[d.key]) for d in dims}


def trial_overrides(dims: Sequence[SearchDimension], tune_config: Mapping[str, Any]) -> list[str]:
    return [o for d in dims for o in d.overrides(d.value(tune_config[d.key]))]


def check_trial_configs(experiment: str, overrides: Sequence[str], dims: Sequence[SearchDimension],
                        origin: str) -> list:
    """Load the config of every searched value (and of every grid combination when there are at most
    MAX_CHECKED_COMBINATIONS); returns the loaded ExperimentConfigs. Raises ConfigError naming the
    sweep file, the key and the value."""
    from sa_train.config import load_config

    try:
        configs = [load_config(experiment, overrides)]
    except ConfigError as err:
        raise ConfigError(f"{origin}: the base experiment with the sweep's overrides is invalid: {err}") from None
    for dim in dims:
        for value in dim.candidates():
            try:
                configs.append(load_config(experiment, [*overrides, *dim.overrides(value)]))
            except ConfigError as err:
                raise ConfigError(f"{origin}: search_space['{dim.key}'] value {value!r} gives an invalid config: "
                                  f"{err}") from None
    discrete = [d for d in dims if d.kind in DISCRETE]
    combinations = math.prod(len(d.values) for d in discrete)
    if len(discrete) > 1 and combinations <= MAX_CHECKED_COMBINATIONS:
        for combo in itertools.product(*(d.values for d in discrete)):
            chosen = [o for d, v in zip(discrete, combo) for o in d.overrides(v)]
            try:
                configs.append(load_config(experiment, [*overrides, *chosen]))
            except ConfigError as err:
                described = ", ".join(f"{d.key}={v!r}" for d, v in zip(discrete, combo))
                raise ConfigError(f"{origin}: the search space combination {described} gives an invalid config: "
                                  f"{err}") from None
    return configs


def count_trials(dims: Sequence[SearchDimension], num_samples: int) -> int:
    """Trials Tune will create: the grid's size times num_samples (random dimensions add none)."""
    return math.prod(len(d.values) for d in dims if d.kind == "grid") * num_samples


def column_labels(keys: Sequence[str]) -> dict[str, str]:
    """Short, unique report column names for the leaf keys a sweep sets: the last two parts of each
    key (``text_encoder.kind``), or the whole key where those collide."""
    short = {k: ".".join(k.split(".")[-2:]) for k in keys}
    counts: dict[str, int] = {}
    for label in short.values():
        counts[label] = counts.get(label, 0) + 1
    return {k: (label if counts[label] == 1 else k) for k, label in short.items()}
