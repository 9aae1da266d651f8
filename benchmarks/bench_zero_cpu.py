"""ZeRO-2 on CPU: the demo U-Net's step with and without DeepSpeed's contiguous gradient buffer.

DeepSpeed's ``contiguous_gradients`` copies every gradient into one flat buffer from its hook as the
backward produces it, to keep GPU memory unfragmented. sa_train turns it off on CPU
(``sa_train/training/deepspeed_config.py``); the baseline turns it back on through the user's own
override, ``distributed.deepspeed_config`` (a JSON file merged into sa_train's DeepSpeed config).

Two ranks (spawned processes, gloo, no Ray) build sa_train's ``DiffusionTask`` with the demo's
diffusion config (the config of ``bench_diffusion_step``: tiny U-Net, micro-batch 4, ZeRO-2, EMA) and
step it on fixed batches of the demo's shape; the two settings alternate ``--repeats`` times. Printed:
per-step wall time, the rank's process CPU and the backward's thread CPU (medians over the repeats,
mean of both ranks), and whether both settings end with bitwise-equal weights.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_zero_cpu   # about 4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.results import cpu_model, record  # noqa: E402

WORLD = 2
PROMPTS = ["a sine tone at 440 Hz", "a drum pattern at 120 bpm", "white noise", "a C major chord"]
SETTINGS = {"contiguous (DeepSpeed's GPU default)": True, "sa_train on CPU": False}


def rank_worker(rank: int, contiguous: bool, warmup: int, steps: int, folder: str) -> None:
    import torch
    import torch.distributed as dist

    from benchmarks.bench_diffusion_step import _fixed_batch, _init_group, demo_diffusion_config
    from sa_train.training.tasks import DiffusionTask

    _init_group(rank, os.path.join(folder, "group"))
    override = Path(folder) / "deepspeed.json"
    if rank == 0:
        override.write_text(json.dumps({"zero_optimization": {"contiguous_gradients": contiguous}}))
    dist.barrier()
    cfg = demo_diffusion_config(Path(folder), total_steps=warmup + steps, log_every=20, ema=True)
    cfg.distributed.deepspeed_config = str(override)
    task = DiffusionTask(cfg, torch.device("cpu"), rank=rank, world_size=WORLD, on_gpu=False)
    assert task.engine.zero_optimization_stage() == 2
    assert task.engine.optimizer.contiguous_gradients is contiguous, "the override did not reach the ZeRO optimizer"
    backward_cpu = [0.0]
    backward = task.engine.backward

    def timed_backward(*args, **kwargs):
        start = time.thread_time()
        out = backward(*args, **kwargs)
        backward_cpu[0] += time.thread_time() - start
        return out

    task.engine.backward = timed_backward
    batches = [_fixed_batch(cfg, PROMPTS, rank + WORLD * k) for k in range(4)]
    for step in range(warmup):
        task.micro_step(batches[step % 4])
    backward_cpu[0] = 0.0
    dist.barrier()
    wall, cpu = time.perf_counter(), time.process_time()
    for step in range(steps):
        task.micro_step(batches[step % 4])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    weights = task.exported_weights()  # collective; full weights on rank 0
    if rank == 0:
        torch.save(weights, os.path.join(folder, "weights.pt"))
    with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
        json.dump({"wall": wall / steps, "cpu": cpu / steps, "backward_cpu": backward_cpu[0] / steps}, f)
    dist.destroy_process_group()


def run(contiguous: bool, warmup: int, steps: int) -> tuple[dict[str, float], dict]:
    import torch
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as folder:
        mp.start_processes(rank_worker, args=(contiguous, warmup, steps, folder), nprocs=WORLD, join=True,
                           start_method="spawn")
        ranks = [json.load(open(os.path.join(folder, f"rank{r}.json"))) for r in range(WORLD)]
        weights = torch.load(os.path.join(folder, "weights.pt"), weights_only=True)
    return {k: sum(r[k] for r in ranks) / WORLD for k in ranks[0]}, weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="measured steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="steps before the measured ones")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each setting, alternating")
    parser.add_argument("--no-append", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()

    import torch

    results: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
    final: dict[str, dict] = {}
    for repeat in range(args.repeats):
        for name, contiguous in SETTINGS.items():
            figures, final[name] = run(contiguous, args.warmup, args.steps)
            results[name].append(figures)
            print(f"run {repeat + 1}/{args.repeats} {name}: " + ", ".join(f"{k} {v:.4f} s" for k, v in figures.items()),
                  flush=True)
    (base_name, base), (ours_name, ours) = results.items()
    equal = all(torch.equal(final[base_name][k], final[ours_name][k]) for k in final[base_name])

    def median(rows, key):
        return statistics.median(r[key] for r in rows)

    def spread(rows, key):
        values = [r[key] for r in rows]
        return f"{min(values):.3f}-{max(values):.3f}"

    parts = []
    for key, label in (("wall", "step wall"), ("cpu", "rank process CPU"), ("backward_cpu", "backward thread CPU")):
        b, o = median(base, key), median(ours, key)
        parts.append(f"{label} {b:.3f} s ({spread(base, key)}) -> {o:.3f} s ({spread(ours, key)}) = {o / b:.2f}x")
    entry = (f"- {datetime.date.today()} bench_zero_cpu (the demo's diffusion step, DiffusionTask ZeRO-2, 2 ranks "
             f"over gloo without Ray, {args.steps} steps after {args.warmup}, {args.repeats} runs of each alternating; "
             f"{cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}): contiguous_gradients on -> off "
             f"(medians, both ranks' mean): " + "; ".join(parts)
             + f"; final weights {'bitwise equal' if equal else 'DIFFERENT'}")
    record(entry, append=not args.no_append)
    if not equal:
        raise SystemExit("the two settings trained different weights")


if __name__ == "__main__":
    main()
