"""Round trip: a stable-audio-tools checkpoint imported with `sa-train import-sat`, written back with
`sa-train export --format sat`, loads strictly into SAT's own modules and gives the original outputs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from sat_helpers import (
    TOLERANCE,
    SATMeanCodec,
    build_sat_autoencoder,
    compare_autoencoders,
    dac_config,
    oobleck_config,
    write_checkpoint,
)

pytestmark = pytest.mark.interop


def import_then_export(run_cli, tmp_path, config: dict, state: dict, *, source: str = "out") -> tuple[dict, dict]:
    """(SAT model config, SAT weights) after import-sat and export --format sat."""
    write_checkpoint(tmp_path / "model.ckpt", state, "unwrapped")
    (tmp_path / "model_config.json").write_text(json.dumps(config))
    assert run_cli("import-sat", tmp_path / "model.ckpt", "--config", tmp_path / "model_config.json",
                   "--out", tmp_path / "out") == 0
    assert run_cli("export", tmp_path / source, "--format", "sat", "--out", tmp_path / "sat") == 0
    return json.loads((tmp_path / "sat" / "model_config.json").read_text()), load_file(str(tmp_path / "sat" / "model.safetensors"))


@pytest.mark.parametrize("make_config", [dac_config, oobleck_config], ids=["dac", "oobleck"])
def test_autoencoder_round_trip_loads_in_sat_with_the_same_outputs(sat, run_cli, tmp_path, make_config):
    original = build_sat_autoencoder(sat, make_config())
    config, weights = import_then_export(run_cli, tmp_path, make_config(), original.state_dict())

    rebuilt = sat.autoencoders.create_autoencoder_from_config(config)
    rebuilt.load_state_dict(weights, strict=True)

    encode_diff, decode_diff = compare_autoencoders(original, SATMeanCodec(rebuilt))
    print(f"{make_config.__name__} round trip: encode {encode_diff:.2e}, decode {decode_diff:.2e}")
    assert encode_diff <= TOLERANCE and decode_diff <= TOLERANCE


def test_text_to_audio_round_trip_gives_sat_the_same_weights_and_unet(sat, run_cli, tmp_path):
    from test_import_diffusion import build_sat_model, inputs, relative, sat_conditioning, sat_config, sat_forward

    wrapper, vae = build_sat_model(sat, sat_config())
    state = dict(wrapper.state_dict())
    state.update({f"pretransform.model.{k}": v for k, v in vae.state_dict().items()})
    config, weights = import_then_export(run_cli, tmp_path, sat_config(), state, source="out/diffusion")

    assert set(weights) == set(state)
    assert max((weights[k] - state[k]).abs().max().item() for k in state) <= 1e-6
    unet = sat.diffusion.UNetCFG1DWrapper(**config["model"]["diffusion"]["config"])
    unet.load_state_dict({k[len("model."):]: v for k, v in weights.items() if k.startswith("model.model.")}, strict=True)
    rebuilt_vae = sat.autoencoders.create_autoencoder_from_config(
        {**config, "model": config["model"]["pretransform"]["config"]})
    rebuilt_vae.load_state_dict({k[len("pretransform.model."):]: v for k, v in weights.items()
                                 if k.startswith("pretransform.model.")}, strict=True)

    x, t, features, mask, starts, totals = inputs()
    with torch.no_grad():
        cond = sat_conditioning(wrapper, features, mask, starts, totals)
        expected = sat_forward(wrapper, x, t, cond, cfg_scale=3.0, batch_cfg=True)
        wrapper.model = unet
        assert relative(sat_forward(wrapper, x, t, cond, cfg_scale=3.0, batch_cfg=True), expected) <= TOLERANCE
    assert max(compare_autoencoders(vae, SATMeanCodec(rebuilt_vae))) <= TOLERANCE


def test_a_model_with_sa_train_only_choices_is_refused_naming_the_key(sat, run_cli, tmp_path, capsys):
    write_checkpoint(tmp_path / "vae.ckpt", build_sat_autoencoder(sat, dac_config()).state_dict(), "unwrapped")
    (tmp_path / "model_config.json").write_text(json.dumps(dac_config()))
    assert run_cli("import-sat", tmp_path / "vae.ckpt", "--config", tmp_path / "model_config.json",
                   "--out", tmp_path / "out", "--set", "model.autoencoder.final_tanh=false") == 0

    assert run_cli("export", tmp_path / "out", "--format", "sat", "--out", tmp_path / "sat") == 2
    assert "model.autoencoder.final_tanh" in capsys.readouterr().err


def test_the_tiny_sat_vae_preset_goes_to_sat_and_back_unchanged(sat, run_cli, tmp_path):
    """The README's rehearsal without the training: an sa_train export of configs/experiments/tiny_sat_vae.yaml
    -> export --format sat -> SAT loads it strictly -> import-sat -> the same sa_train model."""
    from pathlib import Path

    from safetensors.torch import save_file

    from sa_train.config import load_config, to_yaml
    from sa_train.export import load_exported
    from sa_train.models.autoencoder.vae import AutoencoderVAE

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "configs/experiments/tiny_sat_vae.yaml")
    torch.manual_seed(0)
    model = perturb_sa(AutoencoderVAE(cfg.model.autoencoder))
    folder = tmp_path / "exported"
    folder.mkdir()
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    (folder / "config.yaml").write_text(to_yaml(cfg))
    (folder / "meta.json").write_text(json.dumps({"format": "sa_train.exported/1", "stage": "autoencoder", "step": 1,
                                                  "samples_seen": 0, "identity": "x", "has_ema": False}))

    assert run_cli("export", folder, "--format", "sat", "--out", tmp_path / "sat") == 0
    config = json.loads((tmp_path / "sat" / "model_config.json").read_text())
    sat_model = sat.autoencoders.create_autoencoder_from_config(config)
    sat_model.load_state_dict(load_file(str(tmp_path / "sat" / "model.safetensors")), strict=True)
    assert max(compare_autoencoders(sat_model, model.eval(), seed=2, samples=2048)) <= TOLERANCE

    assert run_cli("import-sat", tmp_path / "sat" / "model.safetensors", "--config", tmp_path / "sat" / "model_config.json",
                   "--out", tmp_path / "back") == 0
    back = load_exported(tmp_path / "back", weights="raw")
    assert back.cfg.model.autoencoder == cfg.model.autoencoder
    assert max(compare_autoencoders(sat_model, back.model, seed=3, samples=2048)) <= TOLERANCE


@torch.no_grad()
def perturb_sa(model: torch.nn.Module) -> torch.nn.Module:
    for param in model.parameters():
        param.add_(0.1 * torch.randn_like(param))
    return model.eval()
