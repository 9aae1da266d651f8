"""Every validation error of the config names the offending key and value, and says what is allowed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sa_train.config import ConfigError, load_config
from sa_train.models.conditioners.config import TEXT_ENCODER_KINDS, TIMING_KINDS

ROOT = Path(__file__).resolve().parents[1]
TINY_DIFFUSION = ROOT / "configs/experiments/tiny_diffusion.yaml"
TINY_AUTOENCODER = ROOT / "configs/experiments/tiny_autoencoder.yaml"
WAVEFORM = ROOT / "configs/experiments/waveform.yaml"


def error_of(overrides: list[str], path: Path | None = TINY_DIFFUSION) -> str:
    """The ConfigError message that loading ``path`` with ``overrides`` raises."""
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    return str(err.value)


def test_the_base_experiments_are_valid():
    """The errors below come from the overrides, not from the files they start from."""
    for path in (TINY_DIFFUSION, TINY_AUTOENCODER, WAVEFORM):
        load_config(path)


# --- unknown keys --------------------------------------------------------------------------------


def test_unknown_nested_key_on_command_line_is_named_with_a_suggestion():
    msg = error_of(["training.stepz=5"])
    assert "training.stepz" in msg
    assert "training.steps" in msg.replace("training.stepz", "")
    assert "command-line" in msg


def test_unknown_deeply_nested_key_suggests_the_sibling():
    msg = error_of(["model.unet.multiplers=[1,2,2]"])
    assert "model.unet.multiplers" in msg and "'model.unet.multipliers'" in msg


def test_unknown_top_level_key_is_named_with_a_suggestion():
    msg = error_of(["trainig.steps=5"])
    assert "trainig" in msg and "'training" in msg


def test_unknown_top_level_section_in_a_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"base": [str(TINY_DIFFUSION)], "distributd": {"num_workers": 2}}))
    msg = error_of([], path)
    assert "distributd" in msg and "'distributed'" in msg
    assert str(path) in msg


def test_unknown_nested_key_in_a_yaml_file_names_key_file_and_suggestion(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"base": [str(TINY_DIFFUSION)], "training": {"global_batchsize": 8}}))
    msg = error_of([], path)
    assert "training.global_batchsize" in msg
    assert "'training.global_batch_size'" in msg
    assert str(path) in msg


def test_unknown_key_in_a_base_preset_names_the_preset(tmp_path):
    (tmp_path / "preset.yaml").write_text(yaml.safe_dump({"model": {"unet": {"num_head": 4}}}))
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({"base": ["preset"]}))
    msg = error_of([], exp)
    assert "model.unet.num_head" in msg and "'model.unet.num_heads'" in msg
    assert "preset.yaml" in msg


def test_unknown_key_with_nothing_close_points_to_print_config():
    msg = error_of(["zzzzqqq=1"])
    assert "zzzzqqq" in msg and "--print-config" in msg


# --- wrong types -----------------------------------------------------------------------------------


def test_wrong_type_names_key_value_and_expected_type():
    msg = error_of(["training.steps=abc"])
    assert "training.steps" in msg and "abc" in msg and "int" in msg


def test_wrong_type_in_a_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"base": [str(TINY_DIFFUSION)], "data": {"sample_rate": "fast"}}))
    msg = error_of([], path)
    assert "data.sample_rate" in msg and "fast" in msg and str(path) in msg


def test_float_for_an_int_field_is_a_wrong_type():
    msg = error_of(["training.steps=5.5"])
    assert "training.steps" in msg and "5.5" in msg


def test_scalar_for_a_list_field_is_a_wrong_type():
    msg = error_of(["model.unet.multipliers=3"])
    assert "model.unet.multipliers" in msg and "List[int]" in msg


def test_wrong_type_of_a_list_element_names_its_index():
    msg = error_of(["model.unet.multipliers=[1,x,2]"])
    assert "model.unet.multipliers[1]" in msg and "'x'" in msg


def test_scalar_for_a_whole_section_names_the_section():
    msg = error_of(["model.unet=3"])
    assert "model.unet" in msg and "3" in msg and "section" in msg


def test_scalar_for_a_top_level_section_in_yaml_names_section_and_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("training: 5\n")
    msg = error_of([], path)
    assert "training" in msg and "section" in msg and str(path) in msg


# --- out of range ----------------------------------------------------------------------------------


def test_zero_steps_is_out_of_range():
    msg = error_of(["training.steps=0"])
    assert "training.steps=0" in msg and ">= 1" in msg


def test_cfg_dropout_above_one_is_out_of_range():
    msg = error_of(["model.diffusion.cfg_dropout=1.5"])
    assert "model.diffusion.cfg_dropout=1.5" in msg and "<= 1" in msg


def test_negative_cfg_dropout_is_out_of_range():
    msg = error_of(["model.diffusion.cfg_dropout=-0.1"])
    assert "model.diffusion.cfg_dropout=-0.1" in msg and ">= 0" in msg


def test_exclusive_lower_bound_rejects_the_bound_itself():
    msg = error_of(["training.optimizer.lr=0"])
    assert "training.optimizer.lr=0" in msg and "> 0" in msg


def test_out_of_range_list_element_names_its_index():
    msg = error_of(["model.unet.multipliers=[1,0,2]"])
    assert "model.unet.multipliers[1]=0" in msg


def test_bounds_are_inclusive():
    cfg = load_config(TINY_DIFFUSION, ["model.diffusion.cfg_dropout=1.0", "training.steps=1"])
    assert cfg.model.diffusion.cfg_dropout == 1.0


# --- choices ---------------------------------------------------------------------------------------


def test_unknown_timing_variant_lists_the_allowed_ones():
    msg = error_of(["model.conditioning.timing.kind=foo"])
    assert "model.conditioning.timing.kind" in msg and "foo" in msg
    for kind in TIMING_KINDS:
        assert repr(kind) in msg


def test_unknown_text_encoder_lists_the_allowed_ones():
    msg = error_of(["model.conditioning.text_encoder.kind=bert"])
    assert "model.conditioning.text_encoder.kind" in msg and "bert" in msg
    for kind in TEXT_ENCODER_KINDS:
        assert repr(kind) in msg


def test_unknown_stage_lists_the_stages():
    msg = error_of(["training.stage=finetune"])
    assert "training.stage" in msg and "finetune" in msg and "'autoencoder'" in msg and "'diffusion'" in msg


def test_every_allowed_timing_variant_is_accepted():
    for kind in TIMING_KINDS:
        assert load_config(TINY_DIFFUSION, [f"model.conditioning.timing.kind={kind}"]).model.conditioning.timing.kind == kind


# --- cross-field rules -----------------------------------------------------------------------------


def test_window_not_divisible_by_total_downsampling_names_both_factors():
    # U-Net factors [3, 1] make its downsampling 3, so the two factors are told apart in the message.
    msg = error_of(["model.unet.factors=[3,1]", "data.window_samples=131072"])
    assert "data.window_samples=131072" in msg
    assert re.search(r"autoencoder downsampling \(1024\)", msg)
    assert re.search(r"U-Net downsampling \(3\)", msg)
    assert "3072" in msg


def test_window_divisible_by_autoencoder_only_is_still_rejected():
    msg = error_of(["data.window_samples=132096"])  # 129 x 1024: not a multiple of 1024 x 2
    assert "data.window_samples=132096" in msg and "2048" in msg


def test_waveform_window_must_be_divisible_by_the_unet_alone():
    msg = error_of(["data.window_samples=32769"], WAVEFORM)
    assert "data.window_samples=32769" in msg and "(1)" in msg and "(256)" in msg


def test_autoencoder_window_must_be_divisible_by_its_strides():
    msg = error_of(["data.window_samples=32000"], TINY_AUTOENCODER)
    assert "data.window_samples=32000" in msg and "1024" in msg


def test_global_batch_not_divisible_by_workers_times_accumulation():
    msg = error_of(["training.global_batch_size=8", "distributed.num_workers=2", "training.grad_accum_steps=3"])
    assert "training.global_batch_size=8" in msg
    assert "distributed.num_workers" in msg and "training.grad_accum_steps" in msg and "6" in msg


def test_global_batch_divisible_by_workers_times_accumulation_is_accepted():
    cfg = load_config(TINY_DIFFUSION, ["training.global_batch_size=12", "training.grad_accum_steps=3"])
    assert cfg.training.global_batch_size == 12


def test_diffusion_without_autoencoder_or_latents_says_how_to_fix_it():
    msg = error_of(["model.autoencoder.pretrained=null"])
    assert "training.stage=diffusion" in msg
    assert "model.autoencoder.pretrained" in msg and "data.latents" in msg


def test_diffusion_with_latents_instead_of_an_autoencoder_is_accepted():
    cfg = load_config(TINY_DIFFUSION, ["model.autoencoder.pretrained=null", "data.latents=latents/tiny"])
    assert cfg.data.latents == "latents/tiny"


def test_end_crops_on_latent_windows_are_refused_naming_both_keys():
    msg = error_of(["model.autoencoder.pretrained=null", "data.latents=latents/tiny", "data.end_crop_probability=0.25"])
    assert "data.end_crop_probability=0.25" in msg and "data.latents=" in msg and "set data.end_crop_probability=0" in msg


def test_end_crops_on_audio_windows_are_accepted():
    assert load_config(TINY_AUTOENCODER, ["data.end_crop_probability=0.25"]).data.end_crop_probability == 0.25


def test_autoencoder_stage_needs_no_pretrained_autoencoder():
    assert load_config(TINY_AUTOENCODER).model.autoencoder.pretrained is None


def test_autoencoder_stage_without_an_autoencoder_is_rejected():
    msg = error_of(["model.autoencoder.kind=none"], TINY_AUTOENCODER)
    assert "training.stage=autoencoder" in msg and "model.autoencoder.kind" in msg


def test_latent_channels_differing_from_unet_input_channels():
    msg = error_of(["model.unet.in_channels=8"])
    assert "model.unet.in_channels=8" in msg and "model.autoencoder.latent_channels=16" in msg


def test_latent_channels_change_without_unet_change_is_rejected():
    msg = error_of(["model.autoencoder.latent_channels=32"])
    assert "model.autoencoder.latent_channels=32" in msg and "model.unet.in_channels=16" in msg


def test_waveform_unet_input_channels_must_match_audio_channels():
    msg = error_of(["data.channels=1"], WAVEFORM)
    assert "model.unet.in_channels=2" in msg and "data.channels" in msg and "=1" in msg


def test_factors_length_must_be_one_less_than_multipliers():
    msg = error_of(["model.unet.factors=[1,2,2]"])
    assert "model.unet.factors" in msg and "model.unet.multipliers" in msg and "3" in msg


def test_attention_blocks_length_must_match_multipliers():
    msg = error_of(["model.unet.attention_blocks=[0,1]"])
    assert "model.unet.attention_blocks" in msg and "2" in msg and "3" in msg


def test_a_longer_multipliers_list_alone_is_rejected():
    msg = error_of(["model.unet.multipliers=[1,2,2,4]"])
    assert "model.unet.factors" in msg and "model.unet.multipliers" in msg


def test_offload_params_needs_zero_stage_3():
    msg = error_of(["distributed.offload_params=cpu"])
    assert "distributed.offload_params" in msg and "cpu" in msg and "distributed.zero_stage=3" in msg


def test_offload_params_with_zero_stage_3_is_accepted():
    cfg = load_config(TINY_DIFFUSION, ["distributed.offload_params=cpu", "distributed.zero_stage=3"])
    assert cfg.distributed.offload_params == "cpu"


def test_clap_without_name_or_path_is_rejected():
    msg = error_of(["model.conditioning.text_encoder.kind=clap"])
    assert "model.conditioning.text_encoder.kind=clap" in msg
    assert "model.conditioning.text_encoder.name_or_path" in msg


def test_clap_with_name_or_path_is_accepted():
    cfg = load_config(
        TINY_DIFFUSION,
        ["model.conditioning.text_encoder.kind=clap", "model.conditioning.text_encoder.name_or_path=/models/my_clap"],
    )
    assert cfg.model.conditioning.text_encoder.name_or_path == "/models/my_clap"


@pytest.mark.parametrize("sigma_min", ["600", "500"])
def test_sigma_min_must_be_below_sigma_max(sigma_min):
    msg = error_of([f"model.sampling.sigma_min={sigma_min}", "model.sampling.sigma_max=500"])
    assert "model.sampling.sigma_min" in msg and "model.sampling.sigma_max" in msg and sigma_min in msg


def test_base_width_must_divide_by_attention_heads():
    msg = error_of(["model.unet.num_heads=3"])
    assert "model.unet.num_heads=3" in msg


def test_only_one_error_is_reported_per_load():
    """Validation stops at the first problem, so the message is one clear sentence, not a list."""
    msg = error_of(["training.steps=0", "model.diffusion.cfg_dropout=1.5"])
    assert msg.count("\n") == 0
