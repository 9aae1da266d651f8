"""`sa-train import-sat` of a stable-audio-tools text-to-audio model (adp_cfg_1d U-Net, int timing
conditioners, dac pretransform) gives SAT's outputs: the U-Net with and without classifier-free
guidance, the timing tokens exactly, and the pretransform as an autoencoder of its own."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from sat_helpers import TOLERANCE, compare_autoencoders, dac_config, perturb

from sa_train.export import load_exported
from sa_train.models.conditioners.conditioner import Conditioning

pytestmark = pytest.mark.interop

TEXT_LENGTH, TEXT_WIDTH, COND_DIM, MAX_SECONDS = 6, 512, 32, 16
# The exported model's text encoder must load offline: the embedded encoder at T5-small's width
# stands in for the t5-small that the SAT config names (the U-Net comparisons feed features directly).
TEXT_OVERRIDES = [
    "--set", "model.conditioning.text_encoder.kind=embedded",
    "--set", "model.conditioning.text_encoder.name_or_path=null",
    "--set", f"model.conditioning.text_encoder.embedded_width={TEXT_WIDTH}",
    "--set", "model.conditioning.text_encoder.embedded_layers=1",
]


def sat_config() -> dict:
    unet = {
        "in_channels": 4, "context_embedding_features": COND_DIM, "context_embedding_max_length": TEXT_LENGTH + 2,
        "channels": 32, "resnet_groups": 8, "kernel_multiplier_downsample": 2, "multipliers": [1, 2, 2, 2],
        "factors": [1, 2, 4], "num_blocks": [2, 2, 2], "attentions": [1, 1, 1, 1], "attention_heads": 4,
        "attention_multiplier": 2, "use_nearest_upsample": False, "use_skip_scale": True, "use_context_time": True,
    }
    timing = {"min_val": 0, "max_val": MAX_SECONDS}
    return {
        "model_type": "diffusion_cond",
        "sample_rate": 44100,
        "sample_size": 8 * 8 * 64,
        "model": {
            "pretransform": {"type": "autoencoder", "iterate_batch": True, "config": dac_config()["model"]},
            "conditioning": {"cond_dim": COND_DIM, "configs": [
                {"id": "prompt", "type": "t5", "config": {"t5_model_name": "t5-small", "max_length": TEXT_LENGTH}},
                {"id": "seconds_start", "type": "int", "config": timing},
                {"id": "seconds_total", "type": "int", "config": timing},
            ]},
            "diffusion": {"type": "adp_cfg_1d", "cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                          "config": unet},
            "io_channels": 4,
        },
        "training": {"cfg_dropout_prob": 0.2},
    }


def build_sat_model(sat, config: dict, seed: int = 0):
    """SAT's diffusion wrapper (U-Net + conditioners; the T5 replaced by its projection alone) and its VAE."""
    torch.manual_seed(seed)
    model_cfg = config["model"]
    unet = sat.diffusion.UNetCFG1DWrapper(**model_cfg["diffusion"]["config"])
    conditioners = {
        "prompt": sat.conditioners.Conditioner(TEXT_WIDTH, COND_DIM),  # the T5's trainable part: proj_out
        "seconds_start": sat.conditioners.IntConditioner(COND_DIM, 0, MAX_SECONDS),
        "seconds_total": sat.conditioners.IntConditioner(COND_DIM, 0, MAX_SECONDS),
    }
    wrapper = sat.diffusion.ConditionedDiffusionModelWrapper(
        unet, sat.conditioners.MultiConditioner(conditioners), io_channels=4, sample_rate=44100,
        min_input_length=8, cross_attn_cond_ids=model_cfg["diffusion"]["cross_attention_cond_ids"],
    )
    vae = sat.autoencoders.create_autoencoder_from_config({**config, "model": model_cfg["pretransform"]["config"]})
    return perturb(wrapper, seed), perturb(vae, seed + 1)


@pytest.fixture
def imported(sat, run_cli, tmp_path):
    """(SAT wrapper, SAT VAE, output folder) after importing a SAT text-to-audio checkpoint."""
    config = sat_config()
    wrapper, vae = build_sat_model(sat, config)
    state = dict(wrapper.state_dict())
    state.update({f"pretransform.model.{k}": v for k, v in vae.state_dict().items()})
    torch.save({"state_dict": state}, tmp_path / "model.ckpt")
    (tmp_path / "model_config.json").write_text(json.dumps(config))
    code = run_cli("import-sat", tmp_path / "model.ckpt", "--config", tmp_path / "model_config.json",
                   "--out", tmp_path / "out", *TEXT_OVERRIDES)
    assert code == 0
    return wrapper, vae, tmp_path / "out"


def sat_conditioning(wrapper, features: torch.Tensor, mask: torch.Tensor, starts: list, totals: list) -> dict:
    conditioners = wrapper.conditioner.conditioners
    return {
        "prompt": (conditioners["prompt"].proj_out(features) * mask[..., None], mask),
        "seconds_start": conditioners["seconds_start"](starts, "cpu"),
        "seconds_total": conditioners["seconds_total"](totals, "cpu"),
    }


def our_conditioning(model, features: torch.Tensor, mask: torch.Tensor, starts: list, totals: list) -> Conditioning:
    text = model.conditioner.text_encoder.projection(features) * mask[..., None]
    timing, glob = model.conditioner.timing(torch.tensor(starts, dtype=torch.float32),
                                            torch.tensor(totals, dtype=torch.float32))
    return Conditioning(torch.cat([text, timing], dim=1),
                        torch.cat([mask, torch.ones(mask.shape[0], 2, dtype=torch.bool)], dim=1), glob)


def sat_forward(wrapper, x: torch.Tensor, t: torch.Tensor, cond: dict, **kwargs) -> torch.Tensor:
    """What ConditionedDiffusionModelWrapper.forward computes; SAT 0.0.20's own forward passes
    ``modular_local_cond`` on to adp_cfg_1d, which does not accept it (TypeError)."""
    inputs = wrapper.get_conditioning_inputs(cond)
    inputs.pop("modular_local_cond")
    return wrapper.model(x, t, **inputs, **kwargs)


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


def inputs(seed: int = 3):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 32, generator=generator)
    t = torch.tensor([0.3, 0.8])
    features = torch.randn(2, TEXT_LENGTH, TEXT_WIDTH, generator=generator)
    mask = torch.tensor([[True] * TEXT_LENGTH, [True, True, True, False, False, False]])
    return x, t, features, mask, [0, 3], [5, MAX_SECONDS + 4]  # the last total is clamped by both


def test_adp_unet_imports_with_sats_outputs_with_and_without_guidance(imported):
    wrapper, _, out = imported
    model = load_exported(out / "diffusion", weights="raw", expect_stage="diffusion").model
    x, t, features, mask, starts, totals = inputs()
    with torch.no_grad():
        sat_cond = sat_conditioning(wrapper, features, mask, starts, totals)
        cond = our_conditioning(model, features, mask, starts, totals)
        for key, token in (("seconds_start", 0), ("seconds_total", 1)):
            assert torch.equal(sat_cond[key][0][:, 0], cond.context[:, TEXT_LENGTH + token])  # timing: exact
        plain = relative(model.predict_v(x, t, cond), sat_forward(wrapper, x, t, sat_cond, cfg_scale=1.0))
        null = model.conditioner.null_conditioning(2, cond.context_mask)
        v_cond, v_null = model.predict_v(x, t, cond), model.predict_v(x, t, null)
        guided = relative(v_null + (v_cond - v_null) * 3.0, sat_forward(wrapper, x, t, sat_cond, cfg_scale=3.0, batch_cfg=True))
    print(f"adp_cfg_1d: forward {plain:.2e} relative, guided {guided:.2e} relative")
    assert plain <= TOLERANCE and guided <= TOLERANCE


def test_imported_diffusion_config_carries_sats_choices(imported):
    _, _, out = imported
    cfg = load_exported(out / "diffusion").cfg
    assert (cfg.model.unet.attention_norm_groups, cfg.model.unet.downsample_padding, cfg.model.unet.context_mask) == (
        32, "sat", "zero_kv")
    assert cfg.model.diffusion.null_mask == "prompt" and cfg.model.diffusion.cfg_dropout == pytest.approx(0.2)
    assert cfg.model.autoencoder.pretrained == str((out / "autoencoder").resolve())
    assert cfg.model.conditioning.timing.max_seconds == MAX_SECONDS


def test_the_pretransform_of_a_text_to_audio_checkpoint_imports_as_an_autoencoder(imported, sat, run_cli, tmp_path):
    _, vae, out = imported
    assert max(compare_autoencoders(vae, load_exported(out / "autoencoder").model)) <= TOLERANCE
    code = run_cli("import-sat", tmp_path / "model.ckpt", "--config", tmp_path / "model_config.json",
                   "--out", tmp_path / "vae_only", "--part", "autoencoder")
    assert code == 0
    exported = load_exported(tmp_path / "vae_only", expect_stage="autoencoder")
    assert max(compare_autoencoders(vae, exported.model)) <= TOLERANCE


def test_a_dit_model_is_refused_naming_its_type_and_the_supported_ones(run_cli, tmp_path, capsys):
    config = copy.deepcopy(sat_config())
    config["model"]["diffusion"] = {"type": "dit", "config": {}}
    (tmp_path / "model_config.json").write_text(json.dumps(config))
    torch.save({"state_dict": {}}, tmp_path / "model.ckpt")

    code = run_cli("import-sat", tmp_path / "model.ckpt", "--config", tmp_path / "model_config.json",
                   "--out", tmp_path / "out")

    message = capsys.readouterr().err
    assert code == 2
    assert "'dit'" in message and "adp_cfg_1d" in message and "--part autoencoder" in message
    assert not (tmp_path / "out").exists()


def test_an_unknown_autoencoder_type_is_refused_naming_the_supported_ones(run_cli, tmp_path, capsys):
    config = dac_config()
    config["model"]["encoder"]["type"] = "seanet"
    (tmp_path / "model_config.json").write_text(json.dumps(config))
    torch.save({"state_dict": {}}, tmp_path / "vae.ckpt")

    code = run_cli("import-sat", tmp_path / "vae.ckpt", "--config", tmp_path / "model_config.json",
                   "--out", tmp_path / "out")

    message = capsys.readouterr().err
    assert code == 2 and "'seanet'" in message and "dac, oobleck" in message
