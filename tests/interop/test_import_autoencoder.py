"""`sa-train import-sat` of stable-audio-tools autoencoders gives the same encodings and decodings
as SAT's own modules (small widths, random weights, float32)."""

from __future__ import annotations

import json

import pytest
from sat_helpers import (
    TOLERANCE,
    build_sat_autoencoder,
    compare_autoencoders,
    dac_config,
    oobleck_config,
    write_checkpoint,
)

from sa_train.export import load_exported

pytestmark = pytest.mark.interop

@pytest.mark.parametrize("kind", ["lightning", "unwrapped", "safetensors"])
def test_dac_autoencoder_imports_with_identical_encode_and_decode(sat, run_cli, tmp_path, kind):
    config = dac_config()
    sat_model = build_sat_autoencoder(sat, config)
    suffix = "safetensors" if kind == "safetensors" else "ckpt"
    checkpoint = tmp_path / f"vae.{suffix}"
    write_checkpoint(checkpoint, sat_model.state_dict(), kind)
    (tmp_path / "model_config.json").write_text(json.dumps(config))

    assert run_cli("import-sat", checkpoint, "--config", tmp_path / "model_config.json", "--out", tmp_path / "out") == 0

    exported = load_exported(tmp_path / "out", weights="raw", expect_stage="autoencoder")
    encode_diff, decode_diff = compare_autoencoders(sat_model, exported.model)
    print(f"dac ({kind}): encode {encode_diff:.2e}, decode {decode_diff:.2e}")
    assert encode_diff <= TOLERANCE and decode_diff <= TOLERANCE
    assert exported.meta["step"] == (7 if kind == "lightning" else 0)


def test_lightning_ema_weights_become_the_exports_ema(sat, run_cli, tmp_path):
    config = dac_config()
    raw, ema = build_sat_autoencoder(sat, config, seed=0), build_sat_autoencoder(sat, config, seed=5)
    write_checkpoint(tmp_path / "vae.ckpt", raw.state_dict(), "lightning", ema=ema.state_dict())
    (tmp_path / "model_config.json").write_text(json.dumps(config))

    assert run_cli("import-sat", tmp_path / "vae.ckpt", "--config", tmp_path / "model_config.json",
                   "--out", tmp_path / "out") == 0

    exported = load_exported(tmp_path / "out", weights="ema")
    assert exported.meta["weights"] == "ema"
    assert max(compare_autoencoders(ema, exported.model)) <= TOLERANCE


def test_kl_weight_is_doubled_so_the_penalty_matches_sats(sat, run_cli, tmp_path):
    config = dac_config()
    config["training"] = {"loss_configs": {"bottleneck": {"type": "kl", "weights": {"kl": 1e-4}}}}
    write_checkpoint(tmp_path / "vae.ckpt", build_sat_autoencoder(sat, config).state_dict(), "unwrapped")
    (tmp_path / "model_config.json").write_text(json.dumps(config))

    assert run_cli("import-sat", tmp_path / "vae.ckpt", "--config", tmp_path / "model_config.json",
                   "--out", tmp_path / "out") == 0

    assert load_exported(tmp_path / "out").cfg.model.autoencoder.losses.kl_weight == pytest.approx(2e-4)


def test_oobleck_autoencoder_imports_with_identical_encode_and_decode(sat, run_cli, tmp_path):
    config = oobleck_config()
    sat_model = build_sat_autoencoder(sat, config)
    write_checkpoint(tmp_path / "vae.ckpt", sat_model.state_dict(), "unwrapped")
    (tmp_path / "model_config.json").write_text(json.dumps(config))

    assert run_cli("import-sat", tmp_path / "vae.ckpt", "--config", tmp_path / "model_config.json",
                   "--out", tmp_path / "out") == 0

    exported = load_exported(tmp_path / "out", weights="raw")
    encode_diff, decode_diff = compare_autoencoders(sat_model, exported.model)
    print(f"oobleck: encode {encode_diff:.2e}, decode {decode_diff:.2e}")
    assert encode_diff <= TOLERANCE and decode_diff <= TOLERANCE


def test_a_checkpoint_missing_a_tensor_is_refused_naming_it(sat, run_cli, tmp_path, capsys):
    weights = build_sat_autoencoder(sat, dac_config()).state_dict()
    del weights["decoder.decoder.model.0.bias"]
    weights["encoder.extra"] = weights["encoder.proj_out.bias"]
    write_checkpoint(tmp_path / "vae.ckpt", weights, "unwrapped")
    (tmp_path / "model_config.json").write_text(json.dumps(dac_config()))

    code = run_cli("import-sat", tmp_path / "vae.ckpt", "--config", tmp_path / "model_config.json",
                   "--out", tmp_path / "out")

    message = capsys.readouterr().err
    assert code == 2 and "decoder.decoder.model.0.bias" in message and "encoder.extra" in message
    assert not (tmp_path / "out").exists()
