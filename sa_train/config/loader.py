"""Loading a config: defaults <- presets (``base:``) <- experiment file <- ``key=value`` overrides.

An experiment file is YAML with full dotted sections (``model:``, ``training:`` ...) and an
optional ``base:`` list of other YAML files (paths relative to the file, ``.yaml`` optional)
that are merged first, in order, recursively. Every layer is merged into the typed
:class:`ExperimentConfig`, so an unknown key or a wrong type is caught at the layer that
introduced it, and reported with the file (or override) it came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from sa_train.config.fields import ConfigError
from sa_train.config.schema import ExperimentConfig
from sa_train.config.validate import iter_fields, validate

BASE_KEY = "base"


def all_keys(cfg_cls: type = ExperimentConfig) -> list[str]:
    """Every valid dotted key of the config, sections included."""
    keys: list[str] = []

    def walk(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            keys.append(key)
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            if dataclasses.is_dataclass(default):
                walk(type(default), key + ".")

    walk(cfg_cls, "")
    return keys


def suggest_key(bad_key: str) -> str | None:
    """The valid key closest to a misspelt one, preferring keys of the same section."""
    keys = all_keys()
    parent = bad_key.rpartition(".")[0]
    siblings = [k for k in keys if k.rpartition(".")[0] == parent]
    for pool in (siblings, keys):
        match = difflib.get_close_matches(bad_key, pool, n=1, cutoff=0.6)
        if match:
            return match[0]
    return None


def _full_key(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None) or getattr(err, "key", None) or "?"
    return str(key)


def _schema_field(key: str) -> dataclasses.Field | None:
    """The dataclass field behind a dotted key (list indexes such as ``[1]`` dropped), if any."""
    cls: Any = ExperimentConfig
    found = None
    for name in re.sub(r"\[\d+\]", "", key).split("."):
        fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        found = fields.get(name)
        if found is None:
            return None
        default = found.default_factory() if found.default_factory is not dataclasses.MISSING else None
        cls = type(default) if dataclasses.is_dataclass(default) else None
    return found


def _section_given_a_value(layer: Any, cls: type, prefix: str = "") -> tuple[str, Any] | None:
    """The first (key, value) of a layer where a whole section is set to a non-mapping value.

    OmegaConf reports that mistake (e.g. ``training: 5``) without naming the key, so it is found here.
    """
    if not isinstance(layer, Mapping):
        return None
    for f in dataclasses.fields(cls):
        if f.name not in layer or f.default_factory is dataclasses.MISSING:
            continue
        default = f.default_factory()
        if not dataclasses.is_dataclass(default):
            continue
        value = layer[f.name]
        if not isinstance(value, Mapping):
            return f"{prefix}{f.name}", value
        inner = _section_given_a_value(value, type(default), f"{prefix}{f.name}.")
        if inner:
            return inner
    return None


def _merge(base: DictConfig, layer: Any, origin: str) -> DictConfig:
    """Merge one layer into the typed config, turning OmegaConf errors into ConfigErrors."""
    misplaced = _section_given_a_value(layer, ExperimentConfig)
    if misplaced:
        key, value = misplaced
        raise ConfigError(
            f"{key}={value!r} (from {origin}): '{key}' is a section; give it a mapping of keys, "
            f"e.g. {key}.<name>=<value> on the command line or an indented block in YAML"
        )
    try:
        return OmegaConf.merge(base, layer)  # type: ignore[return-value]
    except ConfigKeyError as err:
        key = _full_key(err)
        hint = suggest_key(key)
        tip = f"; did you mean '{hint}'?" if hint else "; run `sa-train train CONFIG --print-config` to see valid keys"
        raise ConfigError(f"unknown config key '{key}' (from {origin}){tip}") from None
    except ValidationError as err:
        key = _full_key(err)
        value = getattr(err, "value", None)
        field = _schema_field(key)
        expected = f"; expected {field.type}" if field is not None else ""
        raise ConfigError(
            f"{key}={value!r} has the wrong type (from {origin}): "
            f"{str(getattr(err, 'msg', None) or err).splitlines()[0].rstrip('.')}{expected}"
        ) from None


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (model:, data:, training: ...), not {type(data).__name__}")
    return data


def _resolve_base(entry: str, relative_to: Path) -> Path:
    path = (relative_to / entry).resolve()
    if path.suffix not in (".yaml", ".yml"):
        path = path.with_name(path.name + ".yaml")
    return path


def _layers(path: Path, seen: tuple[Path, ...] = ()) -> Iterable[tuple[dict, str]]:
    """The layers of a file in merge order: its bases (recursively), then its own body."""
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"config files include each other in a cycle: {chain}")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, []) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list):
        raise ConfigError(f"'{BASE_KEY}' in {path} must be a list of YAML files")
    for entry in bases:
        base_path = _resolve_base(str(entry), path.parent)
        if not base_path.exists():
            raise ConfigError(f"base file '{entry}' listed in {path} not found (looked for {base_path})")
        yield from _layers(base_path, (*seen, path))
    yield data, str(path)


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override '{item}' must look like key=value, e.g. training.steps=100")
        try:  # one at a time, so that a malformed value is reported with its own override
            OmegaConf.from_dotlist([item])
        except (OmegaConfBaseException, yaml.YAMLError) as err:
            first = str(err).splitlines()[0]
            raise ConfigError(
                f"override '{item}' could not be parsed ({first}); values are YAML, e.g. "
                "model.unet.multipliers=[1,2,2] or tracking.run_name=null"
            ) from None
    return OmegaConf.from_dotlist(list(overrides))


def compose(path: str | Path | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """The merged (typed, unvalidated) config as an OmegaConf object."""
    cfg: DictConfig = OmegaConf.structured(ExperimentConfig)
    if path is not None:
        for layer, origin in _layers(Path(path)):
            cfg = _merge(cfg, layer, origin)
    if overrides:
        cfg = _merge(cfg, _parse_overrides(overrides), "command-line override")
    return cfg


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load, compose and validate a config; raises ConfigError on any user mistake."""
    cfg = compose(path, overrides)
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"incomplete config: {err}") from None
    assert isinstance(obj, ExperimentConfig)
    return validate(obj)


def to_yaml(cfg: ExperimentConfig) -> str:
    """The fully resolved config as YAML (what --print-config shows and runs store)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_flat_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as {dotted key: value}, e.g. for MLflow params."""
    return {key: value for key, _, value in iter_fields(cfg)}


def from_yaml(text: str) -> ExperimentConfig:
    """Rebuild a config from the YAML that :func:`to_yaml` wrote (e.g. in an exported model)."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"stored config is not valid YAML: {err}") from None
    cfg = _merge(OmegaConf.structured(ExperimentConfig), data, "stored config")
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, ExperimentConfig)
    return validate(obj)
