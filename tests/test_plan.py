"""`sa-train plan`: counts on the meta device, FLOPs from torch's counter, ZeRO memory, time, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from sa_train.cli.main import main
from sa_train.config import load_config
from sa_train.planning import make_plan
from sa_train.planning.compute import SavedTensorMeter
from sa_train.planning.estimate import GPU_PEAK_TFLOPS, time_estimate, zero_memory
from sa_train.planning.parameters import components

ROOT = Path(__file__).resolve().parents[1]
PAPER_DIFFUSION = str(ROOT / "configs/experiments/stable_audio_1_0_diffusion.yaml")
TINY_DIFFUSION = str(ROOT / "configs/experiments/tiny_diffusion.yaml")
TINY_AUTOENCODER = str(ROOT / "configs/experiments/tiny_autoencoder.yaml")

PAPER_UNET = 906_679_744  # reference config count (REFERENCE.md)
PAPER_VAE = 133.4e6


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["plan", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def paper_plan_json() -> dict:
    """The JSON of `sa-train plan <stable_audio_1_0 diffusion> --json` (computed once: ~5 s)."""
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["plan", PAPER_DIFFUSION, "--json"])
    assert code == 0
    return json.loads(buffer.getvalue())


def test_plan_json_reports_the_paper_unet_and_vae_sizes(paper_plan_json):
    params = paper_plan_json["parameters"]
    unet = params["unet"]["count"]
    vae = params["autoencoder.encoder"]["count"] + params["autoencoder.decoder"]["count"]
    assert abs(unet - PAPER_UNET) / PAPER_UNET < 0.01
    assert abs(vae - PAPER_VAE) / PAPER_VAE < 0.03
    assert params["unet"]["role"] == "trained"
    # The hub text encoder is never downloaded: reported as frozen and not counted.
    assert params["conditioning.text_encoder"]["count"] is None
    assert "laion/clap-htsat-unfused" in params["conditioning.text_encoder"]["note"]


def test_plan_answers_how_long_the_papers_640k_steps_take(paper_plan_json):
    batch, flops, time = paper_plan_json["batch"], paper_plan_json["flops"], paper_plan_json["time"]
    assert (batch["global"], batch["workers"], batch["micro_batch"]) == (256, 64, 4)
    assert paper_plan_json["shapes"]["input"] == [4, 64, 4096]  # 4,194,304 samples / 1024
    assert paper_plan_json["shapes"]["context"] == [4, 79, 768]  # 77 text + 2 timing tokens
    assert flops["encode_per_micro_batch"] == 0  # the experiment reads pre-encoded latents
    assert flops["per_step"] == flops["per_micro_batch"] * 64
    expected = flops["per_step"] * 640_000 / (64 * 312e12 * 0.4)
    assert time["total_seconds"] == pytest.approx(expected, rel=1e-9)
    assert time["days"] == pytest.approx(expected / 86400, rel=1e-9)
    assert 0.1 < time["days"] < 100
    assert time["cost_usd"] == pytest.approx(time["gpu_hours"] * 4.1, rel=1e-9)


def test_zero3_state_memory_is_16_bytes_per_parameter_over_the_workers(paper_plan_json):
    memory = paper_plan_json["memory"]
    trained = paper_plan_json["trained_parameters"]
    stages = {row["stage"]: row for row in memory["zero_stages"]}
    assert stages[3]["state_bytes"] == pytest.approx(16 * trained / 64, rel=1e-6)
    assert stages[0]["state_bytes"] == pytest.approx(16 * trained, rel=1e-6)
    states = [stages[s]["state_bytes"] for s in range(4)]
    assert states == sorted(states, reverse=True) and len(set(states)) == 4
    assert memory["configured_zero_stage"] == 2
    # Activations of micro-batch 4 at 4096 frames with memory-efficient attention: GBs, not bytes.
    assert 1e9 < memory["activations_bytes"] < 40e9


def test_flops_scale_linearly_with_the_micro_batch():
    small = make_plan(load_config(TINY_DIFFUSION, ["training.global_batch_size=8"]))
    large = make_plan(load_config(TINY_DIFFUSION, ["training.global_batch_size=16"]))
    assert (small.micro_batch, large.micro_batch) == (4, 8)
    assert large.compute.total_flops / small.compute.total_flops == pytest.approx(2.0, rel=0.01)
    assert large.compute.activation_bytes / small.compute.activation_bytes == pytest.approx(2.0, rel=0.05)


def test_gradient_accumulation_multiplies_flops_per_step_not_per_micro_batch():
    plain = make_plan(load_config(TINY_DIFFUSION))
    overrides = ["training.global_batch_size=16", "training.grad_accum_steps=2"]
    accumulated = make_plan(load_config(TINY_DIFFUSION, overrides))
    assert accumulated.micro_batch == plain.micro_batch
    assert accumulated.compute.total_flops == plain.compute.total_flops
    assert accumulated.flops_per_step == 2 * plain.flops_per_step


def test_training_from_audio_adds_the_frozen_encoder_flops():
    from_audio = make_plan(load_config(TINY_DIFFUSION))
    from_latents = make_plan(load_config(TINY_DIFFUSION, ["data.latents=some/shards"]))
    assert from_audio.compute.encode_flops > 0
    assert from_latents.compute.encode_flops == 0
    assert from_audio.compute.train_flops == from_latents.compute.train_flops
    assert from_audio.frozen_bytes > from_latents.frozen_bytes


def test_gradient_checkpointing_trades_activation_memory_for_recompute_flops():
    plain = make_plan(load_config(TINY_DIFFUSION))
    checkpointed = make_plan(load_config(TINY_DIFFUSION, ["model.unet.gradient_checkpointing=true"]))
    assert checkpointed.compute.activation_bytes < plain.compute.activation_bytes
    assert checkpointed.compute.train_backward_flops > plain.compute.train_backward_flops
    assert checkpointed.compute.train_forward_flops == plain.compute.train_forward_flops


def test_trainable_conditioning_count_matches_the_built_conditioner():
    from sa_train.models.conditioners.conditioner import Conditioner

    for overrides in ([], ["model.conditioning.timing.kind=fourier", "model.diffusion.null_embedding=zeros"]):
        cfg = load_config(TINY_DIFFUSION, overrides)
        parts = {c.name: c.parameters for c in components(cfg)}
        counted = parts["conditioning.trainable"]
        built = Conditioner(cfg.model.conditioning, cfg.model.diffusion, cfg.model.unet.context_width)
        assert counted == sum(p.numel() for p in built.parameters())
        assert parts["conditioning.text_encoder"] == built.frozen_parameter_count()


def test_local_text_encoder_is_counted_from_its_config_without_weights(tmp_path):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=100, d_model=48, d_kv=8, num_heads=2, d_ff=64, num_layers=2)
    config.save_pretrained(tmp_path)  # config.json only: no weights, no tokenizer
    cfg = load_config(
        TINY_DIFFUSION,
        ["model.conditioning.text_encoder.kind=t5", f"model.conditioning.text_encoder.name_or_path={tmp_path}"],
    )
    parts = {c.name: c for c in components(cfg)}
    built = sum(p.numel() for p in T5EncoderModel(config).parameters())
    assert parts["conditioning.text_encoder"].parameters == built
    context = cfg.model.unet.context_width
    assert "text projection" in parts["conditioning.trainable"].note
    embedded = {c.name: c.parameters for c in components(load_config(TINY_DIFFUSION))}
    embedded_projection = cfg.model.conditioning.text_encoder.embedded_width * context + context
    t5_projection = 48 * context + context  # d_model 48 -> context width
    expected = embedded["conditioning.trainable"] - embedded_projection + t5_projection
    assert parts["conditioning.trainable"].parameters == expected


def test_autoencoder_stage_trains_the_vae_and_the_discriminator():
    plan = make_plan(load_config(TINY_AUTOENCODER))
    parts = {c.name: c for c in plan.components}
    trained = [name for name, c in parts.items() if c.role == "trained"]
    assert sorted(trained) == ["autoencoder.decoder", "autoencoder.encoder", "discriminator"]
    assert plan.trained_parameters == sum(parts[name].parameters for name in trained)
    assert parts["unet"].role == "unused"
    assert plan.compute.train_backward_flops > plan.compute.train_forward_flops > 0
    assert plan.compute.activation_bytes > 0


def test_saved_tensor_meter_counts_inputs_once_and_skips_parameters():
    layer = nn.Linear(8, 16)
    x = torch.randn(4, 8, requires_grad=True)
    meter = SavedTensorMeter(exclude=layer.parameters())
    with meter.hooks():
        y = layer(x)
        z = (y * y).sum()  # saves y (16 x 4 floats), twice (both operands): counted once
    z.backward()
    assert meter.total == x.numel() * 4 + y.numel() * 4


def test_zero_memory_follows_the_zero_paper_and_offload():
    rows = zero_memory(1000, workers=10, precision="fp32", activations_bytes=5, frozen_bytes=7)
    assert [(r.parameters_bytes, r.gradients_bytes, r.optimizer_bytes) for r in rows] == [
        (4000, 4000, 8000), (4000, 4000, 800), (4000, 400, 800), (400, 400, 800)
    ]
    assert rows[0].total_bytes == 16000 + 5 + 7
    offloaded = zero_memory(1000, 10, "bf16", 0, 0, offload_optimizer=True, offload_parameters=True)
    assert offloaded[0].optimizer_bytes == 12000  # stage 0 cannot offload
    assert offloaded[3].state_bytes == 200  # only the sharded bf16 gradients stay on the GPU


def test_time_estimate_is_flops_times_steps_over_cluster_throughput():
    estimate = time_estimate(1e15, 1000, gpus=8, gpu="h100", utilization=0.5, price_per_gpu_hour=2.0)
    seconds = 1e15 * 1000 / (8 * GPU_PEAK_TFLOPS["h100"] * 1e12 * 0.5)
    assert estimate.total_seconds == pytest.approx(seconds)
    assert estimate.cost == pytest.approx(seconds / 3600 * 8 * 2.0)
    with pytest.raises(ValueError, match="utilization"):
        time_estimate(1e15, 10, gpus=1, utilization=1.5)
    with pytest.raises(ValueError, match="unknown GPU"):
        time_estimate(1e15, 10, gpus=1, gpu="tpu")


def test_cli_prints_aligned_tables_and_returns_zero(capsys):
    code, out, _ = run_cli(capsys, TINY_DIFFUSION, "--gpu", "l4", "--utilization", "0.5")
    assert code == 0
    for heading in ("Parameters", "FLOPs", "Memory per GPU", "Time (2 x l4: 121 TFLOP/s"):
        assert heading in out
    zero_rows = [line for line in out.splitlines() if re.match(r"[0-3] {2,}\d+\.\d\d ", line)]
    assert len(zero_rows) == 4
    assert len({line.index(".") for line in zero_rows}) == 1  # numbers right-aligned in columns
    assert "<- configured" in out


def test_cli_gpu_flag_changes_the_time_by_the_peak_ratio(capsys):
    times = {}
    for gpu in ("a100", "h100"):
        code, out, _ = run_cli(capsys, TINY_DIFFUSION, "--json", "--gpu", gpu)
        assert code == 0
        times[gpu] = json.loads(out)["time"]["total_seconds"]
    assert times["a100"] / times["h100"] == pytest.approx(989 / 312)


def test_cli_config_errors_exit_with_2(capsys):
    code, _, err = run_cli(capsys, TINY_DIFFUSION, "training.global_batch_size=7")
    assert code == 2 and "global_batch_size" in err
    code, _, err = run_cli(capsys, TINY_DIFFUSION, "model.unet.bse_width=3")
    assert code == 2 and "unknown config key" in err


def test_cli_rejects_a_utilization_outside_zero_to_one(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", TINY_DIFFUSION, "--utilization", "40"])
    assert exit_info.value.code == 2
    assert "utilization" in capsys.readouterr().err


def test_plan_states_the_paper_checkpoint_size_as_parameters_times_bytes(paper_plan_json):
    # bf16, ZeRO-2, EMA on: fp32 model 4 B + fp32 EMA 4 B + fp32 master and Adam moments 12 B
    # + DeepSpeed's bf16 module copy 2 B = 22 B per trained parameter (all exported here).
    trained = paper_plan_json["trained_parameters"]
    checkpoint = paper_plan_json["checkpoint"]
    assert checkpoint["model_bytes"] == 4 * trained and checkpoint["ema_bytes"] == 4 * trained
    assert checkpoint["optimizer_bytes"] == 12 * trained and checkpoint["module_bytes"] == 2 * trained
    assert checkpoint["total_bytes"] == 22 * trained
    assert 19e9 < checkpoint["total_bytes"] < 21e9  # the 907M U-Net: about 20 GB a checkpoint
    assert checkpoint["storage_bytes"] == checkpoint["total_bytes"] * checkpoint["kept"]
    # The EMA now lives on the GPUs, sharded like the fp32 master.
    stages = {row["stage"]: row for row in paper_plan_json["memory"]["zero_stages"]}
    assert stages[2]["ema_bytes"] == pytest.approx(4 * trained / 64, rel=1e-9)


def test_cli_table_shows_the_checkpoint_size(capsys):
    code, out, _ = run_cli(capsys, TINY_DIFFUSION)
    assert code == 0
    section = out[out.index("Checkpoint size"):]
    assert re.search(r"one checkpoint\s+\d+\.\d\d", section)


def test_checkpoint_size_by_zero_stage_and_precision():
    from sa_train.planning.estimate import checkpoint_size

    # fp32 ZeRO-0: the module's weights are the master: 4 (model) + 4 (EMA) + 8 (Adam) + 4 (module).
    assert checkpoint_size(10, 10, "fp32", 0, ema=True).total_bytes == 200
    assert checkpoint_size(10, 10, "fp32", 2, ema=True).total_bytes == 240  # + a separate fp32 master
    assert checkpoint_size(10, 10, "bf16", 3, ema=False).total_bytes == 160  # no module copy at stage 3
    # The autoencoder stage: the discriminator has optimizer shards but is not exported.
    size = checkpoint_size(10, 15, "bf16", 2, ema=True)
    assert (size.model_bytes, size.optimizer_bytes, size.module_bytes) == (40, 180, 30)
