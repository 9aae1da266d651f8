"""`make gpu-check`: everything a lent H100/H200 should confirm, in one run of under 8 minutes, one table.

Without a CUDA device it prints "no GPU: ..." and exits 0 (nothing appended). On a GPU:

1. attention  the GPU attention tests (tests/models/test_attention.py: sdpa and xformers against
              the math backend, fp32 and bf16, padded keys) in a pytest subprocess, and at a
              U-Net shape (batch 4, 16 heads, 1024 queries x 1024 self keys / 79 context keys with
              padding, bf16): the largest difference from math.
2. train step the paper-shape U-Net (stable_audio_1_0: 907M parameters, 4 x 64 x 4096 latents,
              79 context tokens) forward + backward under bf16 autocast, per attention backend:
              TFLOP/s from FLOPs counted on the meta device and MFU against the device's dense bf16
              peak (bench_gpu's functions).
3. ZeRO memory peak memory of one rank of the paper's 64-worker run at ZeRO stages 0-3: each stage
              in its own process, a real DeepSpeed engine (bf16, sa_train's config builder) and the
              EMA of its partition, world size 64 through torch's fake process group (collectives
              are no-ops: memory is real, the numbers computed are not), three optimizer steps at
              micro-batch 4; beside the plan's estimate for the same stage. The same run times the
              EMA update against the step (target <= 2%; the step has no communication here, so
              the fraction is an upper bound).
4. generation 95.1 s of stereo audio from noise: 100 DPM-Solver++ steps with CFG (batch 2 per
              U-Net call), then the VAE decoder, bf16 (bench_gpu's function).

Each section that fails prints its error in its row and the others still run. When it ran on a
GPU, a dated line goes to benchmarks/RESULTS.md. ``--cpu-smoke`` runs every section on the CPU with
the tiny preset and small shapes (checks the script; figures meaningless; nothing appended).

    make gpu-check          (= PYTHONPATH=. python -m benchmarks.gpu_check)
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import bench_gpu  # noqa: E402
from benchmarks.results import record  # noqa: E402

PAPER_CONFIG = bench_gpu.PAPER_CONFIG
SMOKE_CONFIG = bench_gpu.SMOKE_CONFIG
STAGES = (0, 1, 2, 3)
STAGE_TIMEOUT_S = 150


@dataclass
class Row:
    check: str
    result: str
    figure: str = ""
    ok: Optional[bool] = None  # None: a measurement without a pass/fail


@dataclass
class Setup:
    device: torch.device
    config: str
    frames: Optional[int]
    batch: int
    generation_steps: int
    warmup: int
    iterations: int
    world: int  # workers of the run whose one rank the ZeRO processes measure (a fake process group)
    smoke: bool


def no_gpu_message() -> str:
    return (f"no GPU: torch {torch.__version__} sees no CUDA device here (torch.cuda.is_available() is False); "
            "gpu-check did not run and appended nothing. Run `make gpu-check` on a machine with an NVIDIA "
            "H100/H200 and the GPU install (requirements-gpu.lock); `--cpu-smoke` checks the script on the CPU.")


# 1. Attention -----------------------------------------------------------------------------------


def attention_tests(setup: Setup) -> list[Row]:
    rows = []
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
               os.path.join(REPO, "tests", "models", "test_attention.py")]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = [line for line in run.stdout.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    summary = lines[-1] if lines else f"pytest exited {run.returncode}"
    gpu_skipped = "needs a CUDA GPU" in run.stdout
    ok = run.returncode == 0 and (setup.smoke or not gpu_skipped)
    rows.append(Row("attention tests (pytest)", summary.strip("= "), "GPU tests skipped" if gpu_skipped else "", ok))

    from sa_train.models.unet.attention import attention, xformers_available

    g = torch.Generator(device=setup.device).manual_seed(0)
    batch, heads, width = (4, 16, 64) if not setup.smoke else (2, 2, 8)
    length = 1024 if not setup.smoke else 32
    dtype = torch.bfloat16 if setup.device.type == "cuda" else torch.float32
    backends = ["sdpa"] + (["xformers"] if setup.device.type == "cuda" and xformers_available() else [])
    for keys, label in ((length, "self"), (79, "cross, padded")):
        q = torch.randn(batch, heads, length, width, generator=g, device=setup.device).to(dtype)
        k = torch.randn(batch, heads, keys, width, generator=g, device=setup.device).to(dtype)
        v = torch.randn(batch, heads, keys, width, generator=g, device=setup.device).to(dtype)
        mask = None
        if label.startswith("cross"):
            mask = torch.ones(batch, keys, dtype=torch.bool, device=setup.device)
            mask[:, 24:77] = False  # a short prompt's padding; the 2 timing tokens stay
        expected = attention(q, k, v, mask, backend="math").float()
        for backend in backends:
            got = attention(q, k, v, mask, backend=backend).float()
            error = (got - expected).abs().max().item()
            tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-4
            rows.append(Row(f"attention {backend} vs math ({label}, {str(dtype).split('.')[-1]})",
                            "ok" if error <= tolerance else "MISMATCH", f"max |diff| {error:.1e} (tol {tolerance:g})",
                            error <= tolerance))
    if setup.device.type == "cuda" and "xformers" not in backends:
        rows.append(Row("attention xformers", "not installed", "pip install the GPU lock", False))
    return rows


# 2. Train step ----------------------------------------------------------------------------------


def _shapes(cfg, setup: Setup) -> "bench_gpu.Shapes":
    from sa_train.models.conditioners.timing import TimingEmbedding

    model = cfg.model
    with torch.device("meta"):
        timing = TimingEmbedding(model.conditioning.timing, model.unet.context_width)
    frames = setup.frames or cfg.data.window_samples // model.autoencoder.downsampling
    return bench_gpu.Shapes(setup.batch, model.unet.in_channels, frames,
                            model.conditioning.text_encoder.max_length + timing.num_tokens,
                            model.unet.context_width, timing.global_width)


def train_step(setup: Setup, cfg) -> list[Row]:
    from sa_train.models.unet.attention import xformers_available
    from sa_train.models.unet.unet import UNet1D

    shapes = _shapes(cfg, setup)
    forward, backward = bench_gpu.count_training_flops(cfg.model.unet, shapes)
    flops = forward + backward
    name = torch.cuda.get_device_name(setup.device) if setup.device.type == "cuda" else "CPU"
    peak = bench_gpu.peak_tflops(name) if setup.device.type == "cuda" else None
    torch.manual_seed(0)
    unet = UNet1D(cfg.model.unet, global_cond_width=shapes.global_width).to(setup.device)
    params = sum(p.numel() for p in unet.parameters())
    backends = (["xformers"] if setup.device.type == "cuda" and xformers_available() else []) + ["sdpa"]
    rows = []
    for backend in backends:
        r = bench_gpu.time_training(unet, backend, shapes, setup.device, setup.device.type == "cuda",
                                    setup.warmup, setup.iterations)
        precision = "bf16" if setup.device.type == "cuda" else "fp32"
        label = (f"train step {backend} ({params / 1e6:.0f}M, {shapes.batch}x{shapes.channels}x{shapes.frames}, "
                 f"{precision} fwd+bwd)")
        if r.error:
            rows.append(Row(label, r.error, "", False))
            continue
        achieved = flops / r.seconds / 1e12
        mfu = f", MFU {achieved / peak:.1%} of {peak:g}" if peak else ""
        rows.append(Row(label, f"{r.seconds * 1e3:.0f} ms", f"{achieved:.0f} TFLOP/s{mfu}; peak "
                        f"{r.peak_bytes / 2**30:.1f} GiB", None if not peak else achieved / peak >= 0.4))
    del unet
    if setup.device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


# 3. ZeRO memory ---------------------------------------------------------------------------------


def zero_stage_worker(stage: int, setup: Setup, out: str) -> None:
    """One rank of a ``world``-worker run at one ZeRO stage (fake process group): peak memory."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE=str(setup.world), LOCAL_WORLD_SIZE="1",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT="29511")
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=setup.world)
    from sa_train.config import load_config
    from sa_train.models.unet.unet import UNet1D
    from sa_train.training.engines import make_engine
    from sa_train.training.sharded_ema import ShardedEMA

    on_gpu = setup.device.type == "cuda"
    cfg = load_config(setup.config, _stage_overrides(stage, setup))
    shapes = _shapes(cfg, setup)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(setup.device)
    torch.manual_seed(0)
    unet = UNet1D(cfg.model.unet, global_cond_width=shapes.global_width).to(setup.device)
    engine = make_engine(unet, cfg, cfg.training.optimizer, setup.world, on_gpu)
    ema = ShardedEMA(engine, cfg.training.ema.decay) if cfg.training.ema.enabled else None
    args = bench_gpu.inputs(shapes, shapes.batch, setup.device)
    dtype = torch.bfloat16 if on_gpu else torch.float32
    step_s, ema_s = [], []
    for step in range(1, 4):  # step 1 warms up; 2 and 3 are timed
        bench_gpu.synchronize(setup.device)
        start = time.perf_counter()
        with bench_gpu.autocast(setup.device, on_gpu):
            out_ = engine(args["x"].to(dtype), args["t"], args["context"].to(dtype), args["context_mask"],
                          args["global_cond"].to(dtype) if args["global_cond"] is not None else None)
        engine.backward(out_.float().square().mean())
        engine.step()
        bench_gpu.synchronize(setup.device)
        middle = time.perf_counter()
        if ema is not None:
            ema.update(step)
        bench_gpu.synchronize(setup.device)
        if step > 1:
            step_s.append(middle - start)
            ema_s.append(time.perf_counter() - middle)
    peak = torch.cuda.max_memory_allocated(setup.device) if on_gpu else float("nan")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"stage": engine.zero_optimization_stage(), "peak_bytes": peak, "step_s": step_s, "ema_s": ema_s,
                   "ema_elements": sum(t.numel() for t in ema.shadow) if ema is not None else 0,
                   "parameters": sum(p.numel() for p in unet.parameters())}, f)
    dist.destroy_process_group()


def _stage_overrides(stage: int, setup: Setup) -> list[str]:
    return [f"distributed.zero_stage={stage}", f"distributed.num_workers={setup.world}",
            f"training.global_batch_size={setup.world * setup.batch}", "training.grad_accum_steps=1",
            "model.autoencoder.pretrained=unused"]


def zero_memory(setup: Setup, cfg) -> list[Row]:
    from sa_train.config import load_config
    from sa_train.planning import make_plan

    plan = make_plan(load_config(setup.config, _stage_overrides(0, setup)))
    planned = {m.stage: m.total_bytes for m in plan.memory}
    rows = []
    for stage in STAGES:
        label = f"ZeRO-{stage} peak memory, 1 rank of {setup.world}"
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "stage.json")
            command = [sys.executable, "-m", "benchmarks.gpu_check", "--zero-stage-worker", str(stage),
                       "--result-file", out, "--world", str(setup.world)] + (["--cpu-smoke"] if setup.smoke else [])
            env = dict(os.environ, PYTHONPATH=REPO)
            try:
                run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                                     timeout=STAGE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                rows.append(Row(label, f"timed out after {STAGE_TIMEOUT_S} s", "", False))
                continue
            if run.returncode != 0 or not os.path.exists(out):
                last = (run.stderr.strip().splitlines() or ["no output"])[-1]
                rows.append(Row(label, "error", last[:160], False))
                continue
            with open(out, encoding="utf-8") as f:
                result = json.load(f)
        peak = result["peak_bytes"]
        figure = f"plan {planned[stage] / 2**30:.1f} GiB (with activations)"
        rows.append(Row(label, f"{peak / 2**30:.1f} GiB" if peak == peak else "n/a on CPU", figure, None))
        if result["ema_elements"]:
            ema, step = sum(result["ema_s"]), sum(result["step_s"])
            fraction = ema / (ema + step)
            rows.append(Row(f"ZeRO-{stage} EMA update, 1 rank of {setup.world}", f"{fraction:.2%} of a step",
                            f"{ema / len(result['ema_s']) * 1e3:.2f} ms over {result['ema_elements']:,} fp32 "
                            f"elements; step {step / len(result['step_s']):.3f} s without communication",
                            fraction <= 0.02 if not setup.smoke else None))
    return rows


# 4. Generation ----------------------------------------------------------------------------------


def generation(setup: Setup, cfg) -> list[Row]:
    from sa_train.models.autoencoder.vae import AutoencoderVAE
    from sa_train.models.unet.unet import UNet1D

    shapes = _shapes(cfg, setup)
    torch.manual_seed(0)
    unet = UNet1D(cfg.model.unet, global_cond_width=shapes.global_width).to(setup.device).eval()
    vae = AutoencoderVAE(cfg.model.autoencoder).to(setup.device).eval()
    gen = bench_gpu.time_generation(cfg, unet, vae, shapes, setup.device, setup.device.type == "cuda",
                                    setup.generation_steps)
    ok = gen.total_s < bench_gpu.TARGET_GENERATION_S if setup.device.type == "cuda" else None
    return [Row(f"generation {gen.audio_seconds:.1f} s stereo, {setup.generation_steps} "
                f"{cfg.model.sampling.sampler} steps, CFG {cfg.model.sampling.cfg_scale:g}",
                f"{gen.total_s:.2f} s", f"sampling {gen.sampling_s:.2f} + decode {gen.decode_s:.2f}; paper 8 s on "
                f"an A100; target < {bench_gpu.TARGET_GENERATION_S:g} s", ok)]


# The run ----------------------------------------------------------------------------------------


def format_table(rows: list[Row]) -> str:
    head = ("check", "result", "figures", "")
    body = [(r.check, r.result, r.figure, {True: "ok", False: "FAIL", None: ""}[r.ok]) for r in rows]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [head, *body])


def run_section(name: str, function, rows: list[Row], *args) -> None:
    started = time.perf_counter()
    try:
        rows.extend(function(*args))
    except Exception as err:  # noqa: BLE001 - one failed section must not hide the others
        logging.getLogger("gpu_check").exception("%s failed", name)
        rows.append(Row(name, "error", f"{type(err).__name__}: {str(err).splitlines()[0][:160]}", False))
    print(f"[{name}: {time.perf_counter() - started:.0f} s]", flush=True)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="run every section on the CPU with the tiny preset (checks the script; nothing appended)")
    parser.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    parser.add_argument("--world", type=int, default=None, help="workers of the run whose one rank is measured "
                        "(default: the config's distributed.num_workers, 64 for the paper)")
    parser.add_argument("--zero-stage-worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    if not args.cpu_smoke and not torch.cuda.is_available():
        print(no_gpu_message())
        return 0
    from sa_train.config import load_config

    smoke = args.cpu_smoke
    config = SMOKE_CONFIG if smoke else PAPER_CONFIG
    cfg = load_config(config, ["model.autoencoder.pretrained=unused"])
    setup = Setup(
        device=torch.device("cpu") if smoke else torch.device("cuda"), config=config,
        frames=32 if smoke else None, batch=1 if smoke else 4, generation_steps=2 if smoke else 100,
        warmup=1 if smoke else 3, iterations=1 if smoke else 10,
        world=args.world or (4 if smoke else cfg.distributed.num_workers), smoke=smoke,
    )
    if smoke:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if args.zero_stage_worker is not None:
        zero_stage_worker(args.zero_stage_worker, setup, args.result_file)
        return 0

    started = time.perf_counter()
    name = torch.cuda.get_device_name(setup.device) if not smoke else "CPU (smoke run)"
    print(f"gpu-check on {name}, torch {torch.__version__}, config {os.path.relpath(config, REPO)}", flush=True)
    rows: list[Row] = []
    run_section("attention", attention_tests, rows, setup)
    run_section("train step", train_step, rows, setup, cfg)
    run_section("ZeRO memory", zero_memory, rows, setup, cfg)
    run_section("generation", generation, rows, setup, cfg)
    elapsed = time.perf_counter() - started
    print()
    print(format_table(rows))
    failed = [r.check for r in rows if r.ok is False]
    print(f"\n{len(rows)} checks in {elapsed:.0f} s (budget 480 s); "
          + (f"{len(failed)} failed: {', '.join(failed)}" if failed else "none failed"))
    entry = (f"- {datetime.date.today().isoformat()} gpu_check ({name}, torch {torch.__version__}, {elapsed:.0f} s): "
             + "; ".join(f"{r.check}: {r.result}" + (f" ({r.figure})" if r.figure else "") for r in rows))
    record(entry, append=not (smoke or args.no_append))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
