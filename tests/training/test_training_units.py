"""Unit tests of the training plumbing that needs no Ray: DeepSpeed config, lr schedule, checkpoints."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from sa_train.config import ConfigError, load_config
from sa_train.training.checkpoint import (
    TrainState,
    find_latest_checkpoint,
    load_rng,
    missing_files,
    save_rng,
    write_state,
)
from sa_train.training.config import LRScheduleConfig
from sa_train.training.deepspeed_config import build_deepspeed_config
from sa_train.training.lr_schedule import lr_multiplier

BASE = ["model.autoencoder.pretrained=x"]


def test_deepspeed_config_is_built_from_the_typed_config():
    cfg = load_config(None, BASE + ["training.global_batch_size=32", "training.grad_accum_steps=2",
                                    "distributed.zero_stage=3", "training.grad_clip=0.5", "training.optimizer.lr=3e-4"])
    ds = build_deepspeed_config(cfg, cfg.training.optimizer, world_size=4, on_gpu=True)
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_accumulation_steps"] == 2
    assert ds["train_batch_size"] == 32 and ds["zero_optimization"]["stage"] == 3
    assert ds["gradient_clipping"] == 0.5 and ds["optimizer"]["params"]["lr"] == 3e-4
    assert ds["bf16"]["enabled"] is True  # precision auto on GPU
    cpu = build_deepspeed_config(cfg, cfg.training.optimizer, world_size=4, on_gpu=False)
    assert cpu["bf16"]["enabled"] is False and cpu["optimizer"]["params"]["torch_adam"] is True
    # Contiguous gradient buffers and overlapped reduction are for GPUs; on CPU they only cost time.
    gpu_zero, cpu_zero = ds["zero_optimization"], cpu["zero_optimization"]
    assert gpu_zero["contiguous_gradients"] is True and gpu_zero["overlap_comm"] is True
    assert cpu_zero["contiguous_gradients"] is False and cpu_zero["overlap_comm"] is False


def test_optimizer_offload_switches_to_deepspeed_cpu_adam():
    cfg = load_config(None, BASE + ["distributed.offload_optimizer=cpu"])
    ds = build_deepspeed_config(cfg, cfg.training.optimizer, world_size=2, on_gpu=True)
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["optimizer"]["params"]["torch_adam"] is False


def test_expert_json_is_merged_and_batch_keys_are_checked(tmp_path):
    extra = tmp_path / "ds.json"
    extra.write_text(json.dumps({"zero_optimization": {"reduce_bucket_size": 123}}))
    cfg = load_config(None, BASE + [f"distributed.deepspeed_config={extra}"])
    ds = build_deepspeed_config(cfg, cfg.training.optimizer, world_size=2, on_gpu=False)
    assert ds["zero_optimization"]["reduce_bucket_size"] == 123 and ds["zero_optimization"]["stage"] == 2
    extra.write_text(json.dumps({"train_batch_size": 999}))
    with pytest.raises(ConfigError, match="train_batch_size 999"):
        build_deepspeed_config(cfg, cfg.training.optimizer, world_size=2, on_gpu=False)


def test_bf16_gradients_are_reduced_across_workers_in_fp32():
    from deepspeed.runtime.config import DeepSpeedConfig

    # world_size=1: DeepSpeed's own parser checks the batch keys against the (absent) process group's size.
    cfg = load_config(None, BASE + ["distributed.num_workers=1", "training.precision=bf16"])
    ds = build_deepspeed_config(cfg, cfg.training.optimizer, world_size=1, on_gpu=True)
    assert ds["bf16"]["enabled"] is True and ds["communication_data_type"] == "fp32"
    assert DeepSpeedConfig(ds).communication_data_type == torch.float32  # the key DeepSpeed reads
    opted_out = load_config(None, BASE + ["distributed.num_workers=1", "distributed.gradient_reduce_dtype=precision"])
    ds = build_deepspeed_config(opted_out, opted_out.training.optimizer, world_size=1, on_gpu=True)
    assert DeepSpeedConfig(ds).communication_data_type == torch.bfloat16


def test_bf16_on_cpu_is_a_config_error():
    cfg = load_config(None, BASE + ["training.precision=bf16"])
    with pytest.raises(ConfigError, match="training.precision=bf16 needs a GPU"):
        build_deepspeed_config(cfg, cfg.training.optimizer, world_size=2, on_gpu=False)


def test_lr_schedule_warms_up_linearly_then_decays():
    cosine = lr_multiplier(LRScheduleConfig(kind="cosine", warmup_steps=10, min_lr_ratio=0.1), total_steps=110)
    assert cosine(0) == pytest.approx(0.1) and cosine(9) == pytest.approx(1.0)
    assert cosine(60) == pytest.approx(0.55) and cosine(110) == pytest.approx(0.1)
    exponential = lr_multiplier(LRScheduleConfig(kind="exponential", gamma=0.5), total_steps=10)
    assert exponential(3) == pytest.approx(0.125)


def fake_checkpoint(root: Path, step: int, world_size: int = 2, complete: bool = True) -> Path:
    """A checkpoint folder laid out as the worker writes it, with or without one rank's shard."""
    state = TrainState(step=step, world_size=world_size, zero_stage=2, engines=["model"])
    directory = root / state.tag()
    shard_dir = directory / "model" / state.tag()
    shard_dir.mkdir(parents=True)
    (shard_dir / "mp_rank_00_model_states.pt").write_bytes(b"x")
    for rank in range(world_size if complete else world_size - 1):
        (shard_dir / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").write_bytes(b"x")
    for rank in range(world_size):
        save_rng(directory, rank)
    (directory / "model.safetensors").write_bytes(b"x")
    write_state(directory, state, "model: {}\n", ema=None)
    return directory


def test_an_interrupted_checkpoint_never_replaces_the_last_good_one(tmp_path):
    good = fake_checkpoint(tmp_path, 4)
    broken = fake_checkpoint(tmp_path, 6, complete=False)
    assert missing_files(good) == []
    assert any("zero_pp_rank_1" in m for m in missing_files(broken))
    assert find_latest_checkpoint(tmp_path) == good
    with pytest.raises(ValueError, match="incomplete"):
        find_latest_checkpoint(broken)


def test_no_complete_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no complete checkpoint"):
        find_latest_checkpoint(tmp_path)


def test_rng_states_round_trip_without_pickles(tmp_path):
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    save_rng(tmp_path, rank=0, extra={"time_sampler": {"kind": "sobol", "seed": 1, "num_generated": 8}})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    extra = load_rng(tmp_path, rank=0)
    assert torch.equal(torch.rand(3), expected[0]) and np.allclose(np.random.rand(3), expected[1])
    assert random.random() == expected[2] and extra["time_sampler"]["num_generated"] == 8


@pytest.fixture(scope="module")
def one_rank_group():
    """A real one-rank gloo process group on a free port, as a Ray Train worker of one has. One per
    module: DeepSpeed caches the groups it first sees, as a worker (one group a process) may."""
    import socket

    import torch.distributed as dist

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.MonkeyPatch.context() as env:
        for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
                           "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}.items():
            env.setenv(key, value)
        dist.init_process_group("gloo", rank=0, world_size=1)
        yield
        dist.destroy_process_group()


def test_a_single_worker_trains_with_zero0_and_no_allreduce(one_rank_group):
    """ZeRO-1/2 over one rank only copies; a real one-rank DeepSpeed engine over gloo falls back."""
    from sa_train.training.engines import make_engine

    cfg = load_config(None, BASE + ["distributed.zero_stage=2", "distributed.num_workers=1",
                                    "training.global_batch_size=2"])
    model = torch.nn.Linear(4, 4)
    before = model.weight.detach().clone()
    engine = make_engine(model, cfg, cfg.training.optimizer, world_size=1, on_gpu=False)
    assert engine.zero_optimization_stage() == 0 and engine.enable_backward_allreduce is False
    loss = engine(torch.randn(2, 4)).pow(2).mean()
    engine.backward(loss)
    engine.step()
    assert not torch.equal(engine.module.weight.detach(), before)  # it still trains


def test_the_autoencoder_task_decays_the_waveform_weight_by_its_optimizer_step_across_a_resume(
        one_rank_group, monkeypatch):
    """The waveform term's weight is weight x decay^step: the task passes its optimizer step (not
    its micro-step), and a resumed task goes on from the checkpoint's step, not from 0."""
    from sa_train.data.batch import AudioBatch
    from sa_train.training.tasks import AutoencoderTask

    cfg = load_config(None, ["training.stage=autoencoder", "distributed.num_workers=1", "distributed.device=cpu",
                             "training.global_batch_size=2", "training.grad_accum_steps=2",
                             "model.autoencoder.losses.waveform_l1_weight=8",
                             "model.autoencoder.losses.waveform_l1_decay=0.5"])
    batch = AudioBatch(torch.randn(1, 2, 2048) * 0.1, torch.ones(1, 2048, dtype=torch.bool), ["x"],
                       torch.zeros(1, dtype=torch.long), torch.ones(1, dtype=torch.long))

    def weights_used(task, micro_steps):
        used = []
        original = task.losses.generator_losses

        def spy(*args, **kwargs):
            used.append(task.losses.waveform_weight(kwargs.get("step", 0)))
            return original(*args, **kwargs)

        monkeypatch.setattr(task.losses, "generator_losses", spy)
        results = [task.micro_step(batch) for _ in range(micro_steps)]
        return used, results

    task = AutoencoderTask(cfg, torch.device("cpu"), 0, 1, False)
    used, results = weights_used(task, 4)
    assert used == [8.0, 8.0, 4.0, 4.0]  # two micro-steps per optimizer step
    assert [r.boundary for r in results] == [False, True, False, True]
    assert "waveform_l1" in results[1].metrics

    resumed = AutoencoderTask(cfg, torch.device("cpu"), 0, 1, False)
    resumed.load_extra_state(task.extra_state())
    used, _ = weights_used(resumed, 2)
    assert used == [2.0, 2.0]


def test_an_export_uploaded_to_remote_storage_loads_from_there(tmp_path):
    """Remote run folders (s3://, gs://) get their export uploaded; file:// takes the same pyarrow path."""
    from safetensors.torch import save_file

    from sa_train.config import to_yaml
    from sa_train.export import export_checkpoint, load_exported, upload_folder
    from sa_train.models.diffusion_model import build_autoencoder

    cfg = load_config(None, ["training.stage=autoencoder"])
    checkpoint = fake_checkpoint(tmp_path / "run", 2, world_size=1)
    state = json.loads((checkpoint / "state.json").read_text())
    state["stage"] = "autoencoder"
    (checkpoint / "state.json").write_text(json.dumps(state))
    (checkpoint / "config.yaml").write_text(to_yaml(cfg))
    save_file(build_autoencoder(cfg.model).state_dict(), str(checkpoint / "model.safetensors"))
    local = export_checkpoint(checkpoint, tmp_path / "staging")
    uri = upload_folder(local, (tmp_path / "bucket" / "run" / "exported").as_uri())
    exported = load_exported(uri, weights="raw", expect_stage="autoencoder")
    assert exported.meta["step"] == 2 and exported.meta["weights"] == "raw"


def test_progress_written_to_a_file_takes_about_ten_lines_a_stage():
    import io
    import time as _time

    from sa_train.training import console

    class Board:
        def __init__(self):
            self.step = 0

    board = Board()
    printer = console.ProgressPrinter.__new__(console.ProgressPrinter)
    printer.board, printer.label, printer.stream = board, "stage", io.StringIO()
    printer.every_s, printer.plain_every_s, printer.interactive = 0.001, 60.0, False
    printer._stop, printer._started, printer._last = __import__("threading").Event(), _time.perf_counter(), {}
    steps = iter(range(0, 1001))

    def read():
        step = next(steps, None)
        if step is None:
            printer._stop.set()
            return printer._last
        return {"step": step, "total": 1000, "loss": 0.5, "step_time": 0.1, "eta": 1.0} if step else {}

    printer._read = read
    printer._run()
    lines = printer.stream.getvalue().splitlines()
    assert 10 <= len(lines) <= 12, lines
    assert lines[-1].startswith("stage: [####################] step 1000/1000")


def test_eta_ignores_the_start_up_in_the_first_step(monkeypatch):
    """The first step carries the start-up (4.5 s in the demo against 0.14 s for the others): the
    ETA is unknown after it and then follows the steady steps, instead of promising 37 minutes."""
    import math

    from sa_train.training import progress

    clock = iter([0.0, 4.5, 4.6, 4.7, 4.8])  # construction, then the end of steps 1-4
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    meter = progress.ProgressMeter(total_steps=500)
    first = meter.update(1, 8, 1.0)
    assert first["perf/step_time_s"] == pytest.approx(4.5)  # reported as it was
    assert math.isnan(meter.eta_seconds(1)) and "ETA --:--" in meter.line(1, 0.5)
    for step in (2, 3, 4):
        meter.update(step, 8, 1.0)
    assert meter.step_time == pytest.approx(0.1)
    assert meter.eta_seconds(4) == pytest.approx(496 * 0.1)
    assert "ETA 0m49s" in meter.line(4, 0.5)


def test_logged_metrics_are_means_over_the_interval_not_its_last_step():
    """With log_every=250, the curve point at a log step is the mean of the 250 steps before it
    (one micro-batch's loss swings by x2 in the demo's VAE), and each interval starts afresh."""
    from sa_train.training.progress import IntervalMeans

    rng = np.random.default_rng(0)
    losses = rng.lognormal(mean=1.0, sigma=0.5, size=500)
    interval = IntervalMeans()
    logged = []
    for step, loss in enumerate(losses, start=1):
        interval.add({"loss": loss, "grad_norm": 2 * loss})
        if step % 250 == 0:
            logged.append(interval.take())
    assert [point["loss"] for point in logged] == pytest.approx([losses[:250].mean(), losses[250:].mean()])
    assert logged[1]["grad_norm"] == pytest.approx(2 * losses[250:].mean())
    assert logged[1]["loss"] != pytest.approx(losses[499])
    assert interval.take() == {}


def test_one_rank_agrees_on_finite_losses_and_gives_their_means():
    from sa_train.training.engines import agree_finite_means

    means = agree_finite_means({"loss": torch.tensor([1.0, 3.0]), "kl": torch.tensor(0.5)})
    assert means == {"kl": 0.5, "loss": 2.0}
    assert agree_finite_means({"loss": torch.tensor([1.0, float("inf")]), "kl": torch.tensor(0.5)}) is None
    assert agree_finite_means({"loss": torch.tensor(1.0), "kl": torch.tensor(float("nan"))}) is None
