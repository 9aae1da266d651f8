"""Typed config: shipped experiments, `base:` composition, key=value overrides, help text, round trips."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from sa_train.config import ConfigError, ExperimentConfig, from_yaml, load_config, to_flat_dict, to_yaml
from sa_train.config.loader import all_keys

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / "configs/experiments").glob("*.yaml"))
TINY_DIFFUSION = ROOT / "configs/experiments/tiny_diffusion.yaml"


def write(path: Path, data: dict | str) -> Path:
    """Write a YAML file (a dict is dumped, a string written as is) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def leaves(data: dict, prefix: str = "") -> dict:
    """{dotted key: value} of a nested YAML mapping (lists are leaves)."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and not prefix + key == "tracking.tags":
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def body(path: Path) -> dict:
    """A config file's own values, without its `base:` list."""
    data = yaml.safe_load(path.read_text()) or {}
    data.pop("base", None)
    return data


# --- shipped experiments and presets ---------------------------------------------------------


def test_shipped_experiments_exist():
    names = {p.stem for p in EXPERIMENTS}
    assert {"tiny_autoencoder", "tiny_diffusion", "waveform"} <= names
    assert {"stable_audio_1_0_autoencoder", "stable_audio_1_0_diffusion"} <= names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_shipped_experiment_loads_and_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_shipped_experiment_values_override_its_presets(path):
    """Every value an experiment file writes reaches the loaded config, and so does every preset value
    the experiment does not override."""
    flat = to_flat_dict(load_config(path))
    own = leaves(body(path))
    for key, value in own.items():
        assert flat[key] == value, f"{path.name}: {key}"
    for entry in (yaml.safe_load(path.read_text()) or {}).get("base", []):
        preset = (path.parent / entry).with_suffix(".yaml")
        for key, value in leaves(body(preset)).items():
            if key not in own:
                assert flat[key] == value, f"{preset.name} via {path.name}: {key}"


def test_paper_diffusion_experiment_keeps_preset_sizes_and_its_own_backend():
    cfg = load_config(ROOT / "configs/experiments/stable_audio_1_0_diffusion.yaml")
    assert cfg.model.unet.base_width == 256  # from configs/model/stable_audio_1_0.yaml
    assert cfg.model.unet.multipliers == [4, 4, 4, 5, 5]
    assert cfg.model.unet.attention_backend == "xformers"  # from the experiment itself
    assert cfg.model.autoencoder.latent_channels == cfg.model.unet.in_channels == 64


# --- composition -------------------------------------------------------------------------------


def test_later_bases_override_earlier_ones(tmp_path):
    write(tmp_path / "a.yaml", {"training": {"steps": 10, "seed": 1}})
    write(tmp_path / "b.yaml", {"training": {"steps": 20}})
    ab = write(tmp_path / "ab.yaml", {"base": ["a.yaml", "b.yaml"], "training": {"stage": "autoencoder"}})
    ba = write(tmp_path / "ba.yaml", {"base": ["b.yaml", "a.yaml"], "training": {"stage": "autoencoder"}})
    assert load_config(ab).training.steps == 20
    assert load_config(ba).training.steps == 10
    assert load_config(ab).training.seed == 1  # a value only the earlier base sets survives


def test_experiment_body_overrides_its_bases(tmp_path):
    write(tmp_path / "preset.yaml", {"training": {"stage": "autoencoder", "steps": 10}})
    exp = write(tmp_path / "exp.yaml", {"base": ["preset.yaml"], "training": {"steps": 30}})
    cfg = load_config(exp)
    assert cfg.training.steps == 30
    assert cfg.training.stage == "autoencoder"


def test_nested_bases_merge_root_first(tmp_path):
    write(tmp_path / "root.yaml", {"training": {"stage": "autoencoder", "steps": 1, "seed": 7, "log_every": 3}})
    write(tmp_path / "mid.yaml", {"base": ["root"], "training": {"steps": 2, "seed": 8}})
    exp = write(tmp_path / "exp.yaml", {"base": ["mid"], "training": {"steps": 3}})
    cfg = load_config(exp)
    assert (cfg.training.steps, cfg.training.seed, cfg.training.log_every) == (3, 8, 3)


def test_base_yaml_suffix_is_optional(tmp_path):
    write(tmp_path / "preset.yaml", {"training": {"stage": "autoencoder", "steps": 42}})
    with_suffix = write(tmp_path / "x.yaml", {"base": ["preset.yaml"]})
    without = write(tmp_path / "y.yaml", {"base": ["preset"]})
    as_string = write(tmp_path / "z.yaml", {"base": "preset"})
    assert load_config(with_suffix).training.steps == 42
    assert load_config(without).training.steps == 42
    assert load_config(as_string).training.steps == 42


def test_base_paths_are_relative_to_the_including_file_not_the_working_folder(tmp_path, monkeypatch):
    write(tmp_path / "presets/model/small.yaml", {"training": {"stage": "autoencoder", "steps": 5}})
    exp = write(tmp_path / "presets/experiments/exp.yaml", {"base": ["../model/small"]})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_config(exp).training.steps == 5
    assert load_config(Path("../presets/experiments/exp.yaml")).training.steps == 5


def test_a_cycle_in_base_is_a_clear_error(tmp_path):
    write(tmp_path / "a.yaml", {"base": ["b"]})
    write(tmp_path / "b.yaml", {"base": ["a"]})
    with pytest.raises(ConfigError, match="cycle") as err:
        load_config(tmp_path / "a.yaml")
    assert "a.yaml" in str(err.value) and "b.yaml" in str(err.value)


def test_a_file_that_is_its_own_base_is_a_cycle(tmp_path):
    write(tmp_path / "self.yaml", {"base": ["self"]})
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "self.yaml")


def test_missing_base_file_names_the_path_and_the_including_file(tmp_path):
    exp = write(tmp_path / "exp.yaml", {"base": ["no_such_preset"]})
    with pytest.raises(ConfigError) as err:
        load_config(exp)
    assert str(tmp_path / "no_such_preset.yaml") in str(err.value)
    assert "exp.yaml" in str(err.value)


def test_missing_experiment_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(err.value)


def test_invalid_yaml_names_the_file(tmp_path):
    bad = write(tmp_path / "broken.yaml", "training: {steps: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(bad) in str(err.value)


def test_invalid_yaml_in_a_base_names_the_base(tmp_path):
    write(tmp_path / "broken_base.yaml", "model: [\n")
    exp = write(tmp_path / "exp.yaml", {"base": ["broken_base"]})
    with pytest.raises(ConfigError, match="broken_base.yaml"):
        load_config(exp)


def test_yaml_that_is_not_a_mapping_names_the_file(tmp_path):
    bad = write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml"):
        load_config(bad)


def test_a_folder_instead_of_a_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=str(tmp_path)):
        load_config(tmp_path)


def test_an_empty_file_gives_the_defaults(tmp_path):
    empty = write(tmp_path / "empty.yaml", "")
    cfg = load_config(empty, ["training.stage=autoencoder"])
    assert cfg.training.steps == ExperimentConfig().training.steps


# --- overrides ---------------------------------------------------------------------------------


def test_int_override_beats_the_file():
    assert load_config(TINY_DIFFUSION).training.steps != 7
    assert load_config(TINY_DIFFUSION, ["training.steps=7"]).training.steps == 7


def test_float_override_is_a_float():
    cfg = load_config(TINY_DIFFUSION, ["training.optimizer.lr=1e-3", "model.sampling.cfg_scale=4"])
    assert cfg.training.optimizer.lr == pytest.approx(1e-3)
    assert isinstance(cfg.model.sampling.cfg_scale, float) and cfg.model.sampling.cfg_scale == 4.0


def test_list_override_replaces_the_whole_list():
    cfg = load_config(
        TINY_DIFFUSION,
        ["model.unet.multipliers=[1,2,2,4]", "model.unet.factors=[1,2,2]", "model.unet.attention_blocks=[0,0,1,1]"],
    )
    assert cfg.model.unet.multipliers == [1, 2, 2, 4]
    assert cfg.model.unet.factors == [1, 2, 2]


def test_string_and_bool_overrides():
    cfg = load_config(
        TINY_DIFFUSION,
        ["tracking.run_name=my-run", "tracking.experiment=ablation", "model.unet.gradient_checkpointing=true"],
    )
    assert cfg.tracking.run_name == "my-run"
    assert cfg.tracking.experiment == "ablation"
    assert cfg.model.unet.gradient_checkpointing is True


def test_a_number_given_to_a_string_field_stays_a_string():
    assert load_config(TINY_DIFFUSION, ["tracking.run_name=123"]).tracking.run_name == "123"


def test_null_override_clears_a_value_set_in_the_file():
    path = ROOT / "configs/experiments/stable_audio_1_0_diffusion.yaml"
    assert load_config(path).model.autoencoder.pretrained is not None
    cfg = load_config(path, ["model.autoencoder.pretrained=null"])  # data.latents still set
    assert cfg.model.autoencoder.pretrained is None


def test_dict_override_adds_tracking_tags():
    cfg = load_config(TINY_DIFFUSION, ["tracking.tags.team=audio", "tracking.tags.owner=me"])
    assert cfg.tracking.tags == {"team": "audio", "owner": "me"}


def test_later_override_of_the_same_key_wins():
    assert load_config(TINY_DIFFUSION, ["training.steps=5", "training.steps=9"]).training.steps == 9


def test_override_without_equals_sign_is_a_clear_error():
    with pytest.raises(ConfigError) as err:
        load_config(TINY_DIFFUSION, ["training.steps"])
    assert "training.steps" in str(err.value) and "key=value" in str(err.value)


def test_override_with_empty_key_is_a_clear_error():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(TINY_DIFFUSION, ["=5"])


def test_override_with_unparsable_value_names_the_override():
    with pytest.raises(ConfigError) as err:
        load_config(TINY_DIFFUSION, ["model.unet.multipliers=[1,2"])
    assert "model.unet.multipliers=[1,2" in str(err.value)


def test_overrides_apply_without_a_file():
    cfg = load_config(None, ["training.stage=autoencoder", "training.steps=3"])
    assert cfg.training.steps == 3


# --- schema: help text, keys, round trips ------------------------------------------------------


def config_dataclasses(cls: type = ExperimentConfig) -> list[type]:
    """Every config dataclass reachable from the experiment config, the root included."""
    found = [cls]
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
            if dataclasses.is_dataclass(default) and type(default) not in found:
                found += [c for c in config_dataclasses(type(default)) if c not in found]
    return found


def test_schema_walk_reaches_every_section():
    names = {c.__name__ for c in config_dataclasses()}
    for expected in ("UNetConfig", "AutoencoderConfig", "TextEncoderConfig", "TimingConfig", "DiffusionConfig",
                     "SamplingConfig", "DataConfig", "TrainingConfig", "OptimizerConfig", "DistributedConfig",
                     "TrackingConfig", "StorageConfig"):
        assert expected in names


@pytest.mark.parametrize("cls", config_dataclasses(), ids=lambda c: c.__name__)
def test_every_config_field_has_help_text(cls):
    missing = [f.name for f in dataclasses.fields(cls) if not str(f.metadata.get("help") or "").strip()]
    assert not missing, f"{cls.__module__}.{cls.__name__} fields without help: {missing}"


@pytest.mark.parametrize("cls", config_dataclasses(), ids=lambda c: c.__name__)
def test_every_config_section_has_a_docstring(cls):
    assert (cls.__doc__ or "").strip() and not cls.__doc__.startswith(cls.__name__ + "(")


def test_field_defaults_satisfy_their_own_declared_constraints():
    from sa_train.config.validate import check_fields

    check_fields(ExperimentConfig())  # raises ConfigError naming the field otherwise


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_to_yaml_from_yaml_round_trip_gives_an_equal_config(path):
    cfg = load_config(path, ["tracking.tags.note=round trip", "tracking.run_name=r1"])
    again = from_yaml(to_yaml(cfg))
    assert again == cfg
    assert to_yaml(again) == to_yaml(cfg)


def test_to_flat_dict_has_dotted_keys_for_every_leaf():
    cfg = load_config(TINY_DIFFUSION)
    flat = to_flat_dict(cfg)
    assert flat["training.steps"] == cfg.training.steps
    assert flat["model.unet.multipliers"] == cfg.model.unet.multipliers
    assert flat["model.conditioning.text_encoder.kind"] == cfg.model.conditioning.text_encoder.kind
    valid = set(all_keys())
    for key, value in flat.items():
        assert key in valid
        assert not dataclasses.is_dataclass(value), key
    leaf_keys = {k for k in valid if not any(other.startswith(k + ".") for other in valid)}
    assert set(flat) == leaf_keys  # every leaf key, no section keys


def test_from_yaml_rejects_an_unknown_key_in_a_stored_config():
    text = to_yaml(load_config(TINY_DIFFUSION)).replace("steps: 300", "stepz: 300", 1)
    with pytest.raises(ConfigError, match="stepz"):
        from_yaml(text)


def test_tiny_preset_equals_the_schema_defaults():
    """configs/model/tiny.yaml writes the embedded default out; the two must not drift apart."""
    defaults = to_flat_dict(load_config(None, ["model.autoencoder.pretrained=x"]))
    preset = to_flat_dict(load_config(ROOT / "configs/model/tiny.yaml", ["model.autoencoder.pretrained=x"]))
    assert {k: (defaults[k], preset[k]) for k in defaults if defaults[k] != preset[k]} == {}
