"""Orchestration-overhead benchmark: the sa_train worker loop against a bare PyTorch loop.

Measures, in one run on this machine, the steady-state time per optimizer step of

1. a bare PyTorch loop in this process (the baseline): ``DiffusionModel(cfg.model)``, one fixed
   micro-batch of audio from the same data, the v-objective (``v_objective_loss``), backward,
   gradient clipping, ``torch.optim.AdamW`` (same lr, betas, eps, weight decay), the same lr schedule;
2. sa_train's ``DiffusionTask`` stepped in this process on that batch: its DeepSpeed engine and
   task step without Ray or data (splits the overhead into DeepSpeed's part and Ray's part);
3. the real ``sa_train.training.launcher.launch(cfg)`` path: a Ray Train TorchTrainer with ONE CPU
   worker, a DeepSpeed engine, Ray Data feeding decoded and cropped audio, ``tracking.enabled=false``.

2 and 3 run once per DeepSpeed ZeRO stage in ``--zero-stage`` (default: 0 and 2, sa_train's default).
All use one thread (``torch.set_num_threads(1)``, ``OMP_NUM_THREADS=1``), the waveform preset
(``configs/experiments/waveform.yaml``: no autoencoder, the U-Net on stereo samples) so the model
dominates, the same seed (identical initial weights) and the same micro-batch shape. The EMA is
off in sa_train because the bare loop has none (it is training work, not orchestration).

How the launch's step time is read: the benchmark starts Ray itself with a
``worker_process_setup_hook`` (:func:`install_step_recorder`) that, inside the Ray Train worker,
wraps ``ProgressMeter.update`` -- called once per optimizer step by the worker loop, whatever
``training.log_every`` is -- to append ``step, wall time, process CPU time`` to a file. The
intervals between consecutive steps are the worker loop's full step time (data fetch, DeepSpeed
forward/backward/step, the finite-loss all-reduce, logging and metrics at their configured rate);
Ray and DeepSpeed start-up and the final checkpoint fall outside them exactly, which a difference
of two whole launches (T(N2) - T(N1)) would only cancel up to the noise of two start-ups. The
first ``--warmup`` steps of each loop are skipped. sa_train's code is not changed: the hook only
observes.

The machine is shared, so the bare loop runs in two halves, before and after the others (A-B-A),
and both the mean (what a run pays) and the median (robust to load spikes from other processes)
are shown, as well as the CPU time per step of the training process (for the launch: the Ray
Train worker process, its Ray threads included, not the Ray Data tasks).

Target (issues 5 and 7): the launch's mean step time <= 1.05x the bare loop's.
Prints a table and appends a dated line to benchmarks/RESULTS.md. About 4 minutes on 2 cores.

    PYTHONPATH=. OMP_NUM_THREADS=1 python -m benchmarks.bench_orchestration
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Iterator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from benchmarks.results import cpu_model, record  # noqa: E402
RESULTS = os.path.join(REPO, "benchmarks", "RESULTS.md")
BASE_CONFIG = os.path.join(REPO, "configs", "experiments", "waveform.yaml")
STEP_LOG_ENV = "SA_TRAIN_BENCH_STEP_LOG"
TARGET = 1.05


# ---------------------------------------------------------------------------------------------
# Inside the Ray Train worker: a per-step clock. Kept free of heavy imports, because Ray runs the
# setup hook in every worker process it starts (data tasks included).


def install_step_recorder() -> None:
    """Ray ``worker_process_setup_hook``: log the time of every optimizer step to $SA_TRAIN_BENCH_STEP_LOG.

    One line per step: ``step wall_time cpu_time pid`` (``time.time()``, ``time.process_time()``).
    """
    path = os.environ.get(STEP_LOG_ENV)
    if not path:
        return
    from sa_train.training.progress import ProgressMeter

    original = ProgressMeter.update
    if getattr(original, "bench_step_recorder", False):
        return

    def update(self, step, *args, **kwargs):
        wall, cpu = time.time(), time.process_time()
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{step} {wall!r} {cpu!r} {os.getpid()}\n")
        return original(self, step, *args, **kwargs)

    update.bench_step_recorder = True
    ProgressMeter.update = update


def read_step_log(path: str) -> list[tuple[float, float]]:
    """(wall, cpu) at the end of steps 1..N from the recorder's file, in step order."""
    if not os.path.exists(path):
        raise RuntimeError(f"{path} was not written: the step recorder did not run in the Ray Train worker")
    rows = {}
    pids = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            step, wall, cpu, pid = line.split()
            rows[int(step)] = (float(wall), float(cpu))
            pids.add(pid)
    if len(pids) != 1:
        raise RuntimeError(f"{path}: steps came from {len(pids)} processes (a worker restarted?); rerun the benchmark")
    steps = sorted(rows)
    if steps != list(range(1, len(steps) + 1)):
        raise RuntimeError(f"{path}: steps {steps[:3]}...{steps[-3:]} are not 1..N")
    return [rows[s] for s in steps]


# ---------------------------------------------------------------------------------------------
# Measurements


@dataclass
class LoopTiming:
    """Steady-state seconds per step of one loop: wall and process CPU time of each measured step."""

    name: str
    wall: list[float]
    cpu: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.wall)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_mean(self) -> float:
        return statistics.fmean(self.cpu)

    def extend(self, other: "LoopTiming") -> "LoopTiming":
        return LoopTiming(self.name, self.wall + other.wall, self.cpu + other.cpu)


def steady_intervals(name: str, marks: list[tuple[float, float]], warmup: int, start_mark: bool) -> LoopTiming:
    """Step times from (wall, cpu) marks taken at the end of each step, without steps 1..``warmup``.

    ``start_mark``: ``marks[0]`` was taken before step 1 (else ``marks[0]`` ends step 1).
    """
    intervals = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])]
    intervals = intervals[warmup if start_mark else max(warmup - 1, 0):]
    if not intervals:
        raise ValueError(f"{name}: no steps left after {warmup} warm-up steps; raise --steps")
    return LoopTiming(name, [w for w, _ in intervals], [c for _, c in intervals])


def bench_config(args, data_dir: str, storage: str, zero_stage: int, steps: int):
    """The experiment config both loops use."""
    from sa_train.config import load_config

    return load_config(BASE_CONFIG, [
        f"data.sources=[{data_dir}]", f"data.window_samples={args.window}",
        f"training.global_batch_size={args.batch}", "training.grad_accum_steps=1",
        f"training.steps={steps}", f"training.checkpoint_every={steps}", "training.ema.enabled=false",
        "distributed.num_workers=1", "distributed.device=cpu", f"distributed.zero_stage={zero_stage}",
        "tracking.enabled=false", f"tracking.run_name=bench-orchestration-zero{zero_stage}", f"storage.path={storage}",
    ])


class BareLoop:
    """The baseline: model, optimizer and v-objective step in this process, on one fixed batch."""

    def __init__(self, cfg):
        import torch

        from sa_train.data.pipeline import iter_local_batches
        from sa_train.diffusion.schedule import TimeSampler
        from sa_train.models.diffusion_model import DiffusionModel
        from sa_train.training.lr_schedule import lr_multiplier

        training, diffusion = cfg.training, cfg.model.diffusion
        self.cfg, self.torch = cfg, torch
        # The same micro-batch the worker gets from the same data (seeded crops of the same files).
        self.batch = next(iter_local_batches(cfg.data, training.global_batch_size, seed=training.seed))
        torch.manual_seed(training.seed)  # as DiffusionTask: the same initial weights
        self.model = DiffusionModel(cfg.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        opt = training.optimizer
        self.optimizer = torch.optim.AdamW(
            self.params, lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps, weight_decay=opt.weight_decay
        )
        multiplier = lr_multiplier(training.lr_schedule, training.steps)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, multiplier)
        self.time_sampler = TimeSampler(diffusion.time_sampling, seed=training.seed * 9973)  # rank 0's seed
        self.loss_mask = self.batch.padding_mask if diffusion.mask_padding_in_loss else None

    def step(self) -> float:
        from sa_train.diffusion.objective import v_objective_loss

        torch, batch, diffusion = self.torch, self.batch, self.cfg.model.diffusion
        x0 = batch.audio
        t = self.time_sampler(x0.shape[0])

        def model_fn(x_t, times):
            return self.model(x_t, times, batch.prompts, batch.seconds_start, batch.seconds_total,
                              cfg_dropout=diffusion.cfg_dropout)

        loss = v_objective_loss(model_fn, x0, t, torch.randn_like(x0), self.loss_mask).mean()
        loss.backward()
        if self.cfg.training.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.training.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def run(self, steps: int, warmup: int) -> LoopTiming:
        marks = [(time.time(), time.process_time())]
        for _ in range(warmup + steps):
            self.step()
            marks.append((time.time(), time.process_time()))
        return steady_intervals("bare PyTorch loop", marks, warmup, start_mark=True)


@contextlib.contextmanager
def one_rank_process_group(tmp: str) -> Iterator[None]:
    """A one-rank gloo group and the variables DeepSpeed checks, as Ray Train gives its single worker.

    One group for all in-process engines: DeepSpeed caches its groups, so it cannot be re-created.
    """
    import torch.distributed as dist

    saved = {key: os.environ.get(key) for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")}
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(tmp, 'process_group')}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_engine_in_process(cfg, batch, steps: int, warmup: int) -> LoopTiming:
    """sa_train's DiffusionTask (its DeepSpeed engine) stepped in this process on the bare loop's batch.

    No Ray, no data pipeline, no worker loop: the difference to the bare loop is DeepSpeed's (and the
    task's) own cost; the difference to the launch is Ray Train's, Ray Data's and the loop's.
    Needs :func:`one_rank_process_group`.
    """
    import torch

    from sa_train.training.tasks import DiffusionTask

    task = DiffusionTask(cfg, torch.device("cpu"), rank=0, world_size=1, on_gpu=False)
    marks = [(time.time(), time.process_time())]
    for _ in range(warmup + steps):
        result = task.micro_step(batch)
        assert result.boundary and not result.skipped, "one micro-batch per optimizer step"
        marks.append((time.time(), time.process_time()))
    name = f"DeepSpeed ZeRO-{cfg.distributed.zero_stage} engine in-process (no Ray, no data)"
    return steady_intervals(name, marks, warmup, start_mark=True)


@dataclass
class LaunchTiming:
    zero_stage: int
    steps: LoopTiming
    startup_s: float  # launch() called -> end of step 1
    teardown_s: float  # end of the last step -> launch() returned (final checkpoint, shutdown)


def run_sa_train(cfg, step_log: str, warmup: int) -> LaunchTiming:
    """One launch() of the real path; its step times come from the recorder in the worker."""
    from sa_train.training.launcher import launch

    if os.path.exists(step_log):
        os.remove(step_log)
    started = time.time()
    launch(cfg, export=False)
    returned = time.time()
    marks = read_step_log(step_log)
    if len(marks) != cfg.training.steps:
        raise RuntimeError(f"the worker recorded {len(marks)} steps, expected {cfg.training.steps}")
    name = f"sa_train (Ray Train + DeepSpeed ZeRO-{cfg.distributed.zero_stage}, 1 worker)"
    steps = steady_intervals(name, marks, warmup, start_mark=False)
    return LaunchTiming(cfg.distributed.zero_stage, steps, marks[0][0] - started, returned - marks[-1][0])


def start_ray(step_log: str) -> None:
    """A local Ray instance whose workers run :func:`install_step_recorder` (sa_train joins it)."""
    import ray

    pythonpath = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)
    runtime_env = {
        "env_vars": {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath, STEP_LOG_ENV: step_log},
        "worker_process_setup_hook": "benchmarks.bench_orchestration.install_step_recorder",
    }
    # As sa_train's own local instance: room for the worker (1 CPU) and the data tasks beside it.
    num_cpus = max(os.cpu_count() or 1, 3)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env, log_to_driver=False)


# ---------------------------------------------------------------------------------------------
# Report


def table(bare: LoopTiming, engines: list[LoopTiming], runs: list[LaunchTiming]) -> str:
    head = (f"{'loop':<58} {'steps':>5} {'mean s/step':>11} {'median':>8} {'CPU s/step':>10} "
            f"{'ratio':>6} {'median':>7} {'CPU':>6}")
    rows = [head, "-" * len(head)]

    def row(t: LoopTiming) -> str:
        return (f"{t.name:<58} {len(t.wall):>5} {t.mean:>11.3f} {t.median:>8.3f} {t.cpu_mean:>10.3f} "
                f"{t.mean / bare.mean:>5.3f}x {t.median / bare.median:>6.3f}x {t.cpu_mean / bare.cpu_mean:>5.3f}x")

    rows.append(row(bare))
    rows.extend(row(t) for t in engines)
    rows.extend(row(r.steps) for r in runs)
    rows.extend(f"  ZeRO-{r.zero_stage}: start-up {r.startup_s:.1f} s (launch -> end of step 1), teardown "
                f"{r.teardown_s:.1f} s (last step -> return, with the final checkpoint); outside the step times"
                for r in runs)
    return "\n".join(rows)


def verdict(ratio: float) -> str:
    if ratio <= TARGET:
        return f"target <= {TARGET:.2f}x met"
    return f"target <= {TARGET:.2f}x missed by {100 * (ratio / TARGET - 1):.1f}%"


@dataclass
class Measurements:
    bare: LoopTiming
    engines: dict[int, LoopTiming]  # ZeRO stage -> in-process engine
    runs: list[LaunchTiming]
    params: int
    sample_shape: tuple[int, ...]


def measure(args, tmp: str) -> Measurements:
    """All loops, in the order bare (first half), engines, launches, bare (second half)."""
    from sa_train.data.synth import write_synth_dataset

    data_dir, storage, step_log = (os.path.join(tmp, name) for name in ("synth", "runs", "steps.txt"))
    write_synth_dataset(data_dir, args.files, seed=0, max_seconds=2.0)
    steps = args.warmup + args.steps
    configs = {stage: bench_config(args, data_dir, storage, stage, steps) for stage in args.zero_stage}
    start_ray(step_log)
    try:
        bare_loop = BareLoop(configs[args.zero_stage[0]])
        params = sum(p.numel() for p in bare_loop.params)
        print(f"waveform U-Net: {params / 1e6:.1f}M trained parameters; micro-batch {args.batch} x "
              f"{tuple(bare_loop.batch.audio.shape[1:])}; {args.warmup} warm-up + {args.steps} measured steps per loop",
              flush=True)
        bare = bare_loop.run(args.steps // 2, args.warmup)
        engines = {}
        if not args.no_engine:
            with one_rank_process_group(tmp):
                for stage, cfg in configs.items():
                    engines[stage] = run_engine_in_process(cfg, bare_loop.batch, args.steps, args.warmup)
        runs = [run_sa_train(cfg, step_log, args.warmup) for cfg in configs.values()]
        bare = bare.extend(bare_loop.run(args.steps - args.steps // 2, args.warmup))
    finally:
        import ray

        ray.shutdown()
    return Measurements(bare, engines, runs, params, tuple(bare_loop.batch.audio.shape[1:]))


def results_line(args, m: Measurements, load: float) -> str:
    bare = m.bare
    parts = [f"DeepSpeed ZeRO-{stage} engine alone {t.mean / bare.mean:.3f}x" for stage, t in m.engines.items()]
    for r in m.runs:
        t, ratio = r.steps, r.steps.mean / bare.mean
        parts.append(f"sa_train ZeRO-{r.zero_stage} {t.mean:.3f} s/step = {ratio:.3f}x (median "
                     f"{t.median / bare.median:.3f}x, CPU {t.cpu_mean / bare.cpu_mean:.3f}x), {verdict(ratio)}")
    return (f"- {datetime.date.today().isoformat()} bench_orchestration (waveform U-Net {m.params / 1e6:.1f}M params, "
            f"micro-batch {args.batch} x {args.window} samples, 1 thread, {args.warmup}+{args.steps} steps; "
            f"{cpu_model()}, {os.cpu_count()} cores, load {load:.1f}): bare {bare.mean:.3f} s/step "
            f"(median {bare.median:.3f}); " + "; ".join(parts))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=int, default=4096,
                        help="training window in samples, a multiple of 256 (default 4096: 0.5-1 s/step on one core)")
    parser.add_argument("--batch", type=int, default=4, help="micro-batch = global batch, one worker (default 4)")
    parser.add_argument("--steps", type=int, default=20, help="measured steady-state steps per loop (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up steps skipped in each loop (default 3)")
    parser.add_argument("--zero-stage", type=int, nargs="+", default=[0, 2], choices=[0, 1, 2, 3],
                        help="DeepSpeed ZeRO stages, one in-process engine and one launch each (default: 0 2)")
    parser.add_argument("--files", type=int, default=16, help="synthetic audio files the worker reads (default 16)")
    parser.add_argument("--no-engine", action="store_true",
                        help="skip the in-process DeepSpeed engine rows (they split the overhead: DeepSpeed vs Ray)")
    parser.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    if args.window % 256:
        parser.error(f"--window {args.window} must be a multiple of 256 (the waveform U-Net downsamples 256x)")
    if args.steps < 2 or args.warmup < 1:
        parser.error("--steps must be at least 2 and --warmup at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ["OMP_NUM_THREADS"] = "1"

    import torch

    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_orchestration_") as tmp:
        m = measure(args, tmp)
    load = max(load_before, os.getloadavg()[0])
    print(table(m.bare, list(m.engines.values()), m.runs))
    for r in m.runs:
        ratio = r.steps.mean / m.bare.mean
        print(f"sa_train ZeRO-{r.zero_stage}: {ratio:.3f}x the bare loop (mean step time), {verdict(ratio)}")
    entry = results_line(args, m, load)
    record(entry, append=not args.no_append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
