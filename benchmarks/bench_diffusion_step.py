"""Diffusion-step benchmark: the demo's diffusion stage against a bare two-process DDP loop (issue 11).

Measures, in one run on this machine, the steady-state seconds per optimizer step of

1. the baseline: two processes (``torch.multiprocessing`` spawn, a gloo group on 127.0.0.1), each
   ``DistributedDataParallel(DiffusionModel(cfg.model))``, micro-batch 4 of random latents of the
   demo's shape (16 x 128 frames) with real prompts, the v-objective (``v_objective_loss``, the
   same time sampler and CFG dropout), backward, gradient clipping at ``training.grad_clip``,
   ``torch.optim.AdamW`` (the same lr, betas, eps, weight decay);
2. sa_train's ``DiffusionTask`` (its DeepSpeed engine, ZeRO-2 as the demo) stepped in two spawned
   processes on the same kind of batch: DeepSpeed's share of the difference, without Ray or data;
3. the demo's diffusion stage on the real ``sa_train.training.launcher.launch(cfg)`` path: the
   config of ``sa_train/demo.py`` step 4 (schema defaults = the tiny U-Net and the embedded text
   encoder; global batch 8, 2 CPU workers, ZeRO-2, EMA decay 0.98, cosine lr, log every 20 steps,
   MLflow tracking in an sqlite store) on latent shards in the demo's layout.

The latents are made without a VAE: the synthetic captioned dataset (48 files, as the demo) goes
through sa_train's own encode path (``encode_to_shards``) with a stand-in encoder (a fixed
projection of 1024-sample block means to the tiny VAE's 16 latent channels), so the shards have the
demo's format, prompts, lengths and 128-frame windows. The run sets no ``model.autoencoder.pretrained``
(the driver then only skips the autoencoder identity check and the final audio samples, both outside
the steps measured).

The launch runs the demo's 200 steps (``--steps``; the step count also sizes its data stream), with
the demo's progress line. Its step times are read inside the Ray Train workers: the benchmark starts
Ray itself (sized as the demo's ``ensure_ray(min_cpus=3)``) with a ``worker_process_setup_hook``
(:func:`install_step_recorder`) that wraps ``ProgressMeter.update`` -- called once per optimizer
step -- to append the wall, process-CPU and training-thread-CPU time of each step to a file per
rank. Start-up (Ray Train, Ray Data, DeepSpeed) and the final checkpoint fall outside these
intervals; the first ``--warmup`` steps are skipped. The hook also times the parts of each step
(wall and thread CPU): the data iterator's ``next``, DeepSpeed forward, backward and step, the
finite-loss and metric all-reduces, the EMA update, metric logging. A thread in the benchmark
samples the CPU time of every process it started (Ray's and the spawned ranks), so the CPU a step
costs the whole job is split by process (train workers, Ray Data, raylet, actors). MLflow's own
``perf/step_time_s`` (a 20-step sliding window logged every ``log_every``) is printed as a
cross-check. sa_train's code is not changed: the hook only observes.

The machine is shared, so the DDP loop runs in two halves (``--baseline-steps``), before and after
the others, and the mean (what a run pays), the median and the 10th-90th percentiles of the
per-step times are shown with the CPU time per step. Target (issue 11): sa_train's mean step time
<= 1.2x the DDP loop's; the verdict is "met" or "missed" only when the median ratio agrees (a burst of
load from other work moves one loop's mean alone), else "inconclusive". About 4 minutes on 2 cores.

    PYTHONPATH=. OMP_NUM_THREADS=1 python -m benchmarks.bench_diffusion_step
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.results import cpu_model, record

STEP_LOG_ENV = "SA_TRAIN_BENCH_DIFFUSION_STEP_LOG"
TARGET = 1.2
MICRO_BATCH = 4  # the demo: global batch 8 over 2 workers
WORKERS = 2


# ---------------------------------------------------------------------------------------------
# Inside the Ray Train workers: a per-step clock and the parts of each step. Ray runs the setup
# hook in every worker process (data tasks too), so the heavy patches wait for a ProgressMeter.


class _Phases:
    """Wall and thread-CPU seconds spent in named parts of the current step, reset at every step."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}

    def add(self, name: str, wall: float, cpu: float) -> None:
        total = self.seconds.setdefault(name, [0.0, 0.0])
        total[0] += wall
        total[1] += cpu

    def take(self) -> dict[str, list[float]]:
        out, self.seconds = self.seconds, {}
        return out


_PHASES = _Phases()


def _timed(name: str, function):
    def wrapper(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            _PHASES.add(name, time.perf_counter() - wall, time.thread_time() - cpu)

    wrapper.bench_timed = True
    return wrapper


def _timed_iterator(iterator):
    """The data stream with the time of each ``next`` (the wait for a batch) recorded."""
    while True:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            item = next(iterator)
        except StopIteration:
            return
        finally:
            _PHASES.add("data_wait", time.perf_counter() - wall, time.thread_time() - cpu)
        yield item


def _install_phase_timers(data: bool = True) -> None:
    """Wrap the parts of a worker step (in the Ray Train worker, once it has built its task)."""
    import deepspeed.runtime.engine as ds_engine
    import sa_train.training.tasks as tasks

    engine = ds_engine.DeepSpeedEngine
    if getattr(engine.forward, "bench_timed", False):
        return
    engine.forward = _timed("ds_forward", engine.forward)
    engine.backward = _timed("ds_backward", engine.backward)
    engine.step = _timed("ds_step", engine.step)
    tasks.agree_finite_means = _timed("allreduce_finite", tasks.agree_finite_means)
    tasks.DiffusionTask.micro_step = _timed("micro_step", tasks.DiffusionTask.micro_step)
    tasks.TrainedModelTask.update_ema = _timed("ema_update", tasks.TrainedModelTask.update_ema)
    if not data:
        return
    import ray.data.iterator
    import sa_train.training.worker as worker
    from sa_train.data.batch import AudioBatch

    worker.log_metrics = _timed("log_metrics", worker.log_metrics)
    original_from_numpy = AudioBatch.from_numpy_dict.__func__
    AudioBatch.from_numpy_dict = classmethod(_timed("batch_to_tensors", original_from_numpy))
    iter_batches = ray.data.iterator.DataIterator.iter_batches

    def timed_iter_batches(self, *args, **kwargs):
        return _timed_iterator(iter(iter_batches(self, *args, **kwargs)))

    ray.data.iterator.DataIterator.iter_batches = timed_iter_batches


def install_step_recorder() -> None:
    """Ray ``worker_process_setup_hook``: per step, ``step wall cpu thread-cpu phases-json`` to $STEP_LOG_ENV."""
    path = os.environ.get(STEP_LOG_ENV)
    if not path:
        return
    from sa_train.training.progress import ProgressMeter

    original_init, original = ProgressMeter.__init__, ProgressMeter.update
    if getattr(original, "bench_step_recorder", False):
        return
    state = {"rank": None}

    def init(self, *args, **kwargs):
        # The worker builds its meter after the task (everything to time is imported) and before
        # it asks for the data stream (whose iterator is timed from its first batch).
        if state["rank"] is None:
            import torch.distributed as dist

            state["rank"] = dist.get_rank() if dist.is_initialized() else 0
            _install_phase_timers()
        original_init(self, *args, **kwargs)

    def update(self, step, *args, **kwargs):
        wall, cpu, thread = time.time(), time.process_time(), time.thread_time()
        phases = _PHASES.take()
        with open(f"{path}.rank{state['rank']}", "a", encoding="utf-8") as f:
            f.write(f"{step} {wall!r} {cpu!r} {thread!r} {json.dumps(phases)}\n")
        return original(self, step, *args, **kwargs)

    update.bench_step_recorder = True
    ProgressMeter.__init__, ProgressMeter.update = init, update


# ---------------------------------------------------------------------------------------------
# Timings


@dataclass
class LoopTiming:
    """Steady-state seconds per step of one loop: per-step wall, process CPU and training-thread CPU,
    and the mean (wall, thread CPU) seconds per step of each timed part."""

    name: str
    wall: list[float]
    cpu: list[float] = field(default_factory=list)
    thread: list[float] = field(default_factory=list)
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.wall)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.wall)
        return ordered[round(q * (len(ordered) - 1))]

    @property
    def cpu_mean(self) -> float:
        return statistics.fmean(self.cpu)

    @property
    def thread_mean(self) -> float:
        return statistics.fmean(self.thread)


def merge(name: str, parts: list[LoopTiming]) -> LoopTiming:
    """One timing of several runs of a loop; parts weighted by their steps."""
    n = sum(len(p.wall) for p in parts)
    phases: dict[str, tuple[float, float]] = {}
    for p in parts:
        for key, (wall, cpu) in p.phases.items():
            w0, c0 = phases.get(key, (0.0, 0.0))
            phases[key] = (w0 + wall * len(p.wall) / n, c0 + cpu * len(p.wall) / n)
    return LoopTiming(name, *([x for p in parts for x in getattr(p, a)] for a in ("wall", "cpu", "thread")), phases)


Mark = tuple  # (step, wall, process cpu, thread cpu, {part: [wall, cpu]}) at the end of a step


def rank_timing(name: str, rows: list[Mark], warmup: int, last: int) -> LoopTiming:
    """Intervals ending at steps warmup+1 .. last, from marks of steps 0 (or 1) .. N."""
    by_step = {r[0]: r for r in rows}
    t = LoopTiming(name, [], [], [])
    sums: dict[str, list[float]] = {}
    for step in range(warmup + 1, last + 1):
        a, b = by_step[step - 1], by_step[step]
        t.wall.append(b[1] - a[1])
        t.cpu.append(b[2] - a[2])
        t.thread.append(b[3] - a[3])
        for key, (wall, cpu) in b[4].items():  # the parts timed since the previous mark
            total = sums.setdefault(key, [0.0, 0.0])
            total[0] += wall
            total[1] += cpu
    n = len(t.wall)
    t.phases = {k: (w / n, c / n) for k, (w, c) in sums.items()}
    return t


def write_marks(path: str, rows: list[Mark]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for step, wall, cpu, thread, phases in rows:
            f.write(f"{step} {wall!r} {cpu!r} {thread!r} {json.dumps(phases)}\n")


def read_marks(path: str) -> dict[int, list[Mark]]:
    """rank -> marks in step order, from ``path.rank<r>`` (the recorder's or a spawned rank's)."""
    out = {}
    for rank in range(WORKERS):
        file = f"{path}.rank{rank}"
        if not os.path.exists(file):
            raise RuntimeError(f"{file} was not written: the step recorder did not run in worker {rank}")
        rows = {}
        with open(file, encoding="utf-8") as f:
            for line in f:
                step, wall, cpu, thread, phases = line.split(" ", 4)
                if int(step) in rows:
                    raise RuntimeError(f"{file}: step {step} recorded twice (a worker restarted?); rerun the benchmark")
                rows[int(step)] = (int(step), float(wall), float(cpu), float(thread), json.loads(phases))
        out[rank] = [rows[s] for s in sorted(rows)]
    return out


class JobCpu:
    """CPU seconds of every process this benchmark started (Ray's, spawned ranks), sampled twice a
    second in a thread, so the CPU a window of steps cost can be split by process."""

    def __init__(self, interval: float = 0.5) -> None:
        import threading

        import psutil

        self.psutil, self.interval = psutil, interval
        self.me = psutil.Process()
        self.samples: list[tuple[float, dict[int, float]]] = []
        self.kinds: dict[int, str] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _kind(self, proc) -> str:
        if proc.pid == self.me.pid:
            return "driver (this process)"
        cmdline = proc.cmdline() or [proc.name()]
        if cmdline[0].startswith("ray::"):
            return "ray::" + cmdline[0][5:].split(".")[0].split("(")[0].split()[0]
        joined = " ".join(cmdline)
        if "spawn_main" in joined:
            return "spawned ranks"
        return "multiprocessing resource tracker" if "resource_tracker" in joined else proc.name()

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            now, cpu = time.time(), {}
            for proc in [self.me] + self.me.children(recursive=True):
                try:
                    times = proc.cpu_times()
                    cpu[proc.pid] = times.user + times.system
                    kind = self._kind(proc)
                    if kind != "ray::IDLE" or proc.pid not in self.kinds:
                        self.kinds[proc.pid] = kind  # what the process last did besides idling
                except self.psutil.Error:
                    continue
            self.samples.append((now, cpu))

    def between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds per kind of process between two wall times (nearest samples)."""
        before = min(self.samples, key=lambda s: abs(s[0] - start))[1]
        after = min(self.samples, key=lambda s: abs(s[0] - end))[1]
        out: dict[str, float] = {}
        for pid, cpu in after.items():
            kind = self.kinds.get(pid, "?")
            out[kind] = out.get(kind, 0.0) + cpu - before.get(pid, 0.0)
        return out

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


# ---------------------------------------------------------------------------------------------
# Config and data: the demo's diffusion stage


def demo_diffusion_config(work: Path, total_steps: int, log_every: int, ema: bool, zero_stage: int = 2):
    """``sa_train/demo.py`` step 4's config (its own ``demo_config``), on the benchmark's latents."""
    from sa_train.demo import DemoSettings, demo_config

    settings = DemoSettings(workdir=work, diffusion_steps=total_steps, zero_stage=zero_stage)
    return demo_config(settings, "diffusion", [
        "tracking.run_name=bench-diffusion-step", f"training.steps={total_steps}",
        f"data.latents={work / 'latents'}", "training.global_batch_size=8",
        "training.optimizer.lr=1e-3", "training.lr_schedule.kind=cosine", "training.lr_schedule.warmup_steps=20",
        "training.ema.decay=0.98", f"training.ema.enabled={str(ema).lower()}",
        f"training.checkpoint_every={total_steps}", f"training.log_every={log_every}",
        f"model.sampling.steps={settings.sample_steps}",
    ])


class StandInEncoder:
    """The tiny VAE's shapes without its weights: 1024-sample block means (stereo) projected to 16
    channels by a fixed matrix. ``(batch, 2, samples) -> (batch, 16, samples / 1024)``."""

    def __init__(self, latent_channels: int, downsampling: int, channels: int = 2) -> None:
        import torch

        self.downsampling = downsampling
        self.projection = torch.randn(latent_channels, channels, generator=torch.Generator().manual_seed(0))

    def __call__(self, audio):
        import torch

        b, c, t = audio.shape
        pooled = audio.reshape(b, c, t // self.downsampling, self.downsampling).mean(-1)
        # x4: block means of the synthetic audio are small; this brings the latents near unit scale.
        return torch.einsum("lc,bcf->blf", self.projection.to(audio.dtype), pooled) * 4.0


def write_latents(cfg, work: Path, files: int) -> list[str]:
    """The demo's synthetic dataset, encoded into latent shards by sa_train's encode path; the prompts."""
    from sa_train.data.encode import DecodedRows, encode_to_shards, encode_window
    from sa_train.data.pipeline import load_records
    from sa_train.data.synth import write_synth_dataset

    write_synth_dataset(str(work / "data" / "synth"), files, seed=cfg.training.seed, max_seconds=2.9)
    records = load_records(cfg.data)
    down = cfg.model.autoencoder.downsampling
    rows = DecodedRows([r.path for r in records], [r.prompt for r in records], cfg.data, encode_window(cfg.data, down))
    encoder = StandInEncoder(cfg.model.autoencoder.latent_channels, down, cfg.data.channels)
    encode_to_shards(rows, encoder, "bench-stand-in-encoder", cfg.data.latents, cfg.data.latent_shard_size,
                     downsampling=down, sample_rate=cfg.data.sample_rate)
    return [r.prompt for r in records]


# ---------------------------------------------------------------------------------------------
# The two-process loops: bare DDP (baseline) and sa_train's DiffusionTask without Ray


def _init_group(rank: int, init_file: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORKERS), LOCAL_WORLD_SIZE=str(WORKERS),
                      DS_ACCELERATOR="cpu")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORKERS)


def _fixed_batch(cfg, prompts: list[str], rank: int):
    """Rank's micro-batch: random latents of the demo's shape, real prompts, the demo's timing range."""
    import torch

    from sa_train.data.batch import AudioBatch

    frames = cfg.data.window_samples // cfg.model.autoencoder.downsampling
    g = torch.Generator().manual_seed(1000 + rank)
    return AudioBatch(
        audio=torch.randn(MICRO_BATCH, cfg.model.autoencoder.latent_channels, frames, generator=g),
        padding_mask=torch.ones(MICRO_BATCH, frames, dtype=torch.bool),
        prompts=[prompts[(rank * MICRO_BATCH + i) % len(prompts)] for i in range(MICRO_BATCH)],
        seconds_start=torch.zeros(MICRO_BATCH, dtype=torch.long),
        seconds_total=torch.full((MICRO_BATCH,), 3, dtype=torch.long),
        is_latent=True,
    )


def ddp_worker(rank: int, cfg_yaml: str, prompts: list[str], steps: int, init_file: str, out: str) -> None:
    """Baseline rank: DDP over gloo, v-objective, clipping, AdamW; per-step times to ``out.rank<r>``."""
    _init_group(rank, init_file)
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from sa_train.config import from_yaml
    from sa_train.diffusion.objective import v_objective_loss
    from sa_train.diffusion.schedule import TimeSampler
    from sa_train.models.diffusion_model import DiffusionModel

    cfg = from_yaml(cfg_yaml)
    training, diffusion = cfg.training, cfg.model.diffusion
    batch = _fixed_batch(cfg, prompts, rank)
    torch.manual_seed(training.seed)  # identical initial weights, as DiffusionTask
    model = DistributedDataParallel(DiffusionModel(cfg.model))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = training.optimizer
    optimizer = torch.optim.AdamW(params, lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps, weight_decay=opt.weight_decay)
    time_sampler = TimeSampler(diffusion.time_sampling, seed=training.seed * 9973 + rank)
    dropout = torch.Generator().manual_seed(rank)

    def model_fn(x_t, t):
        return model(x_t, t, batch.prompts, batch.seconds_start, batch.seconds_total,
                     cfg_dropout=diffusion.cfg_dropout, generator=dropout)

    def clock() -> tuple[float, float]:
        return time.perf_counter(), time.thread_time()

    dist.barrier()
    rows = [(0, time.time(), time.process_time(), time.thread_time(), {})]
    for step in range(1, steps + 1):
        c0 = clock()
        x0 = batch.audio
        loss = v_objective_loss(model_fn, x0, time_sampler(x0.shape[0]), torch.randn_like(x0)).mean()
        c1 = clock()
        loss.backward()  # DDP's gradient all-reduce runs in here
        c2 = clock()
        if training.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, training.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        c3 = clock()
        # Named as the launch's parts they compare with (forward + loss, backward + reduction, step).
        parts = {"ds_forward": (c1, c0), "ds_backward": (c2, c1), "ds_step": (c3, c2)}
        rows.append((step, time.time(), time.process_time(), time.thread_time(),
                     {k: [b[0] - a[0], b[1] - a[1]] for k, (b, a) in parts.items()}))
    write_marks(f"{out}.rank{rank}", rows)
    dist.destroy_process_group()


def engine_worker(rank: int, cfg_yaml: str, prompts: list[str], steps: int, init_file: str, out: str) -> None:
    """sa_train's DiffusionTask (DeepSpeed engine, the config's ZeRO stage) on a fixed batch, no Ray."""
    _init_group(rank, init_file)
    import torch
    import torch.distributed as dist

    from sa_train.config import from_yaml
    from sa_train.training.tasks import DiffusionTask

    cfg = from_yaml(cfg_yaml)
    batch = _fixed_batch(cfg, prompts, rank)
    task = DiffusionTask(cfg, torch.device("cpu"), rank=rank, world_size=WORKERS, on_gpu=False)
    _install_phase_timers(data=False)
    dist.barrier()
    rows = [(0, time.time(), time.process_time(), time.thread_time(), {})]
    for step in range(1, steps + 1):
        result = task.micro_step(batch)
        assert result.boundary and not result.skipped, "one micro-batch per optimizer step"
        rows.append((step, time.time(), time.process_time(), time.thread_time(), _PHASES.take()))
    write_marks(f"{out}.rank{rank}", rows)
    dist.destroy_process_group()


def run_two_processes(fn, name: str, cfg, prompts: list[str], steps: int, warmup: int, tmp: str, tag: str,
                      job: "JobCpu") -> tuple[LoopTiming, dict[str, float]]:
    """Spawn the two ranks of ``fn``; rank 0's step times (ranks move in lockstep: collectives) and
    the CPU seconds per step of every process over the measured steps."""
    import torch.multiprocessing as mp

    from sa_train.config import to_yaml

    out = os.path.join(tmp, f"{tag}.steps")
    init_file = os.path.join(tmp, f"{tag}.group")
    mp.spawn(fn, args=(to_yaml(cfg), prompts, warmup + steps, init_file, out), nprocs=WORKERS, join=True)
    marks = read_marks(out)[0]
    cpu = job.between(marks[warmup][1], marks[warmup + steps][1])
    return rank_timing(name, marks, warmup, warmup + steps), {k: v / steps for k, v in cpu.items()}


# ---------------------------------------------------------------------------------------------
# The launch


@dataclass
class LaunchTiming:
    ranks: dict[int, LoopTiming]
    startup_s: float  # launch() called -> end of step 1 on rank 0
    teardown_s: float  # end of the last step -> launch() returned (final checkpoint, export, MLflow)
    mlflow_step_time: list[tuple[int, float]]  # (step, perf/step_time_s) logged by the worker
    job_cpu: dict[str, float]  # CPU seconds per measured step, per kind of process

    @property
    def rank0(self) -> LoopTiming:
        return self.ranks[0]


def start_ray(step_log: str) -> None:
    """A local Ray instance as the demo's ``ensure_ray(min_cpus=3)``, whose workers run the recorder."""
    import ray
    import ray.data

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pythonpath = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath, STEP_LOG_ENV: step_log}
    runtime_env = {"env_vars": env, "worker_process_setup_hook": "benchmarks.bench_diffusion_step.install_step_recorder"}
    ray.data.DataContext.get_current().enable_progress_bars = False
    num_cpus = max(os.cpu_count() or 1, WORKERS + 1 + 2)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env,
             log_to_driver=False, logging_level=logging.WARNING)


def run_launch(cfg, step_log: str, warmup: int, last: int, job: JobCpu) -> LaunchTiming:
    from sa_train.training.launcher import launch

    started = time.time()
    result = launch(cfg, progress_label="      diffusion")  # as the demo: one progress line, polled each second
    returned = time.time()
    marks = read_marks(step_log)
    for rank, rows in marks.items():
        if [r[0] for r in rows] != list(range(1, cfg.training.steps + 1)):
            raise RuntimeError(f"worker {rank} recorded steps {[r[0] for r in rows][:3]}..., not 1..{cfg.training.steps}")
    ranks = {rank: rank_timing(f"sa_train launch (Ray Train + DeepSpeed ZeRO-{cfg.distributed.zero_stage}), rank {rank}",
                               rows, warmup, last) for rank, rows in marks.items()}
    by_step = {r[0]: r for r in marks[0]}
    cpu = job.between(by_step[warmup][1], by_step[last][1])
    mlflow_times = []
    if result.mlflow_run_id:
        from mlflow.tracking import MlflowClient

        history = MlflowClient(result.tracking_uri).get_metric_history(result.mlflow_run_id, "perf/step_time_s")
        mlflow_times = sorted((m.step, m.value) for m in history)
    return LaunchTiming(ranks, marks[0][0][1] - started, returned - marks[0][-1][1], mlflow_times,
                        {k: v / (last - warmup) for k, v in cpu.items()})


# ---------------------------------------------------------------------------------------------
# Report

PHASE_ORDER = [
    ("data_wait", "data: wait for the next batch (Ray Data iterator)"),
    ("batch_to_tensors", "data: numpy batch -> tensors"),
    ("ds_forward", "forward: text encoder + U-Net (DDP: + loss)"),
    ("allreduce_finite", "finite-loss + loss-mean all-reduce (waits for the slower rank)"),
    ("ds_backward", "backward + gradient reduction (ZeRO-2 / DDP)"),
    ("ds_step", "optimizer step: clip, AdamW (+ ZeRO-2 all-gather)"),
    ("micro_step_rest", "rest of micro_step (noise, times, loss, lr/norm reads)"),
    ("ema_update", "EMA update (rank 0)"),
    ("log_metrics", "metrics to MLflow (every log_every steps)"),
    ("loop_rest", "rest of the loop (progress, run board, recorder)"),
]
NESTED = ("ds_forward", "allreduce_finite", "ds_backward", "ds_step")


def phase_rows(t: LoopTiming) -> dict[str, tuple[float, float]]:
    """(wall, thread CPU) per step of each part; nested parts taken out of micro_step."""
    p = dict(t.phases)
    if "micro_step" in p:
        wall, cpu = p.pop("micro_step")
        p["micro_step_rest"] = (wall - sum(p.get(k, (0, 0))[0] for k in NESTED),
                                cpu - sum(p.get(k, (0, 0))[1] for k in NESTED))
    p["loop_rest"] = (t.mean - sum(w for w, _ in p.values()), t.thread_mean - sum(c for _, c in p.values()))
    p["other_threads"] = (float("nan"), t.cpu_mean - t.thread_mean)
    return p


def loops_table(bare: LoopTiming, halves: list[LoopTiming], engine: LoopTiming | None, run: LaunchTiming) -> list[str]:
    head = (f"{'loop (seconds per optimizer step)':<62} {'steps':>5} {'mean':>6} {'median':>6} {'p10-p90':>11} "
            f"{'CPU':>6} {'ratio':>6} {'median':>6} {'CPU':>6}")

    def row(t: LoopTiming, indent: str = "") -> str:
        return (f"{indent + t.name:<62} {len(t.wall):>5} {t.mean:>6.3f} {t.median:>6.3f} {t.percentile(0.1):>5.3f}-"
                f"{t.percentile(0.9):<5.3f} {t.cpu_mean:>6.3f} {t.mean / bare.mean:>5.2f}x {t.median / bare.median:>5.2f}x "
                f"{t.cpu_mean / bare.cpu_mean:>5.2f}x")

    rows = [head, "-" * len(head), row(bare)] + [row(h, "  ") for h in halves]
    rows += ([row(engine)] if engine is not None else []) + [row(t) for t in run.ranks.values()]
    rows.append("(CPU: the rank's process CPU time per step, its threads included)")
    rows.append(f"launch start-up {run.startup_s:.1f} s (launch -> end of step 1), teardown {run.teardown_s:.1f} s "
                f"(last step -> return: checkpoint, export, MLflow), both outside the step times")
    if run.mlflow_step_time:
        rows.append("MLflow perf/step_time_s (rank 0, mean of the 20 steps before): "
                    + ", ".join(f"step {s}: {v:.3f}" for s, v in run.mlflow_step_time))
    return rows


def parts_table(bare: LoopTiming, engine: LoopTiming | None, run: LaunchTiming) -> list[str]:
    columns = [("launch r0", run.ranks[0]), ("launch r1", run.ranks[1])]
    columns += ([("no Ray r0", engine)] if engine is not None else []) + [("DDP r0", bare)]
    parts = [(name, phase_rows(t)) for name, t in columns]
    rows = ["", f"{'where a step goes: wall / thread CPU, s per step':<56}" + "".join(f"{n:>14}" for n, _ in parts)]

    def cell(value: tuple[float, float] | None) -> str:
        if value is None:
            return f"{'-':>14}"
        wall = "  -  " if value[0] != value[0] else f"{value[0]:.3f}"
        return f"{wall:>7}/{value[1]:.3f}"

    for key, label in PHASE_ORDER + [("other_threads", "other threads of the rank's process (CPU)")]:
        rows.append(f"  {label:<54}" + "".join(cell(p.get(key)) for _, p in parts))
    rows.append(f"  {'total':<54}" + "".join(cell((t.mean, t.cpu_mean)) for _, t in columns))
    return rows


DATA_KINDS = ("ray::ReadRange", "ray::MapBatches", "ray::SplitCoordinator")  # Ray Data's processes


def job_cpu_table(run: LaunchTiming, ddp_cpu: dict[str, float], cores: int, stream: str) -> list[str]:
    kinds = sorted(set(run.job_cpu) | set(ddp_cpu), key=lambda k: -max(run.job_cpu.get(k, 0), ddp_cpu.get(k, 0)))
    rows = ["", f"{'CPU seconds per step of every process started here':<56}{'launch':>10}{'DDP':>10}"]
    shown = [k for k in kinds if max(run.job_cpu.get(k, 0), ddp_cpu.get(k, 0)) >= 0.002]
    for kind in shown:
        rows.append(f"  {kind[:54]:<54}{run.job_cpu.get(kind, 0):>10.3f}{ddp_cpu.get(kind, 0):>10.3f}")
    rest = [k for k in kinds if k not in shown]
    rows.append(f"  {f'{len(rest)} other kinds':<54}{sum(run.job_cpu.get(k, 0) for k in rest):>10.3f}"
                f"{sum(ddp_cpu.get(k, 0) for k in rest):>10.3f}")
    total_launch, total_ddp = sum(run.job_cpu.values()), sum(ddp_cpu.values())
    rows.append(f"  {'total':<54}{total_launch:>10.3f}{total_ddp:>10.3f}")
    data = sum(v for k, v in run.job_cpu.items() if k.startswith(DATA_KINDS))
    rows.append(f"  of which Ray Data (read, crop, split: {', '.join(k[5:] for k in DATA_KINDS)}): {data:.3f}; {stream}")
    rows.append(f"  (on {cores} otherwise idle cores a step needs at least total / {cores}: "
                f"{total_launch / cores:.3f} s and {total_ddp / cores:.3f} s)")
    return rows


def verdict(mean_ratio: float, median_ratio: float) -> str:
    """Met or missed only when the mean and the median agree: on a shared machine a burst of load
    in one loop moves its mean alone."""
    if mean_ratio <= TARGET and median_ratio <= TARGET:
        return f"target <= {TARGET:.1f}x met"
    if mean_ratio > TARGET and median_ratio > TARGET:
        return f"target <= {TARGET:.1f}x missed ({min(mean_ratio, median_ratio) / TARGET:.2f}x over or more)"
    return (f"inconclusive: mean {mean_ratio:.2f}x and median {median_ratio:.2f}x fall on both sides of "
            f"{TARGET:.1f}x (a burst of load in one loop); rerun")


def results_line(args, params: int, bare: LoopTiming, engine, run: LaunchTiming, ddp_cpu: dict, load: float) -> str:
    t = run.rank0
    ratio, median_ratio = t.mean / bare.mean, t.median / bare.median
    ph = phase_rows(t)

    def spread(x: LoopTiming) -> str:
        return f"{x.mean:.3f} s/step (median {x.median:.3f}, p10-p90 {x.percentile(0.1):.3f}-{x.percentile(0.9):.3f}, CPU {x.cpu_mean:.3f})"

    parts = [f"DDP baseline {spread(bare)}"]
    if engine is not None:
        parts.append(f"DiffusionTask ZeRO-{args.zero_stage} without Ray {engine.mean / bare.mean:.2f}x "
                     f"(CPU {engine.cpu_mean / bare.cpu_mean:.2f}x)")
    parts.append(f"sa_train launch {spread(t)} = {ratio:.2f}x (median {median_ratio:.2f}x, CPU "
                 f"{t.cpu_mean / bare.cpu_mean:.2f}x), {verdict(ratio, median_ratio)}")
    parts.append(f"job CPU/step launch {sum(run.job_cpu.values()):.3f} vs DDP {sum(ddp_cpu.values()):.3f}")
    parts.append("rank 0 wall parts: " + ", ".join(f"{k} {ph[k][0]:.3f}" for k, _ in PHASE_ORDER if k in ph))
    return (f"- {datetime.date.today().isoformat()} bench_diffusion_step (demo diffusion stage, tiny U-Net "
            f"{params / 1e6:.2f}M params, 2 workers x micro-batch {MICRO_BATCH} x 16 x 128 latents, ZeRO-{args.zero_stage}, "
            f"EMA {'off' if args.no_ema else 'on'}, 1 thread/process, launch {args.steps} steps (first {args.warmup} "
            f"skipped), DDP {args.warmup}+{args.baseline_steps}; {cpu_model()}, "
            f"{os.cpu_count()} cores, load {load:.1f}): " + "; ".join(parts))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200,
                        help="training.steps of the launch (default 200, the demo's: it also sizes the data stream)")
    parser.add_argument("--baseline-steps", type=int, default=300,
                        help="measured steps of the DDP loop, half before and half after the launch (default 300: "
                             "near the length of the launch's measured steps, so both meet bursts of load alike)")
    parser.add_argument("--engine-steps", type=int, default=100,
                        help="measured steps of the DiffusionTask-without-Ray row (default 100)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up steps skipped in each loop (default 5)")
    parser.add_argument("--log-every", type=int, default=20, help="training.log_every of the launch (demo: 20)")
    parser.add_argument("--zero-stage", type=int, default=2, choices=[0, 1, 2, 3],
                        help="distributed.zero_stage of the launch and the no-Ray row (demo: 2)")
    parser.add_argument("--no-ema", action="store_true", help="training.ema.enabled=false (the demo keeps an EMA)")
    parser.add_argument("--files", type=int, default=48, help="synthetic files encoded into latents (demo: 48)")
    parser.add_argument("--no-engine", action="store_true",
                        help="skip the DiffusionTask-without-Ray row (it splits DeepSpeed's share from Ray's)")
    parser.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < args.warmup + 2 or args.baseline_steps < 4 or args.engine_steps < 2:
        parser.error("need --warmup >= 1, --steps >= warmup + 2, --baseline-steps >= 4 and --engine-steps >= 2")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import torch

    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    last = args.steps
    with tempfile.TemporaryDirectory(prefix="bench_diffusion_step_") as tmp:
        work = Path(tmp)
        cfg = demo_diffusion_config(work, args.steps, args.log_every, ema=not args.no_ema, zero_stage=args.zero_stage)
        prompts = write_latents(cfg, work, args.files)
        from sa_train.data.latents import validate_shards

        shards, meta = validate_shards(cfg.data.latents, None)
        consumed = args.steps * cfg.training.global_batch_size
        stream = (f"the run consumes {consumed} examples = {consumed / meta['total_examples']:.1f} passes over "
                  f"{meta['total_examples']} examples in {len(shards)} shard(s)")
        from sa_train.models.diffusion_model import DiffusionModel

        torch.manual_seed(cfg.training.seed)
        params = sum(p.numel() for p in DiffusionModel(cfg.model).parameters() if p.requires_grad)
        print(f"tiny U-Net {params / 1e6:.2f}M trained parameters; {WORKERS} ranks x micro-batch {MICRO_BATCH} x "
              f"({cfg.model.autoencoder.latent_channels}, {cfg.data.window_samples // cfg.model.autoencoder.downsampling}) "
              f"latents; {args.warmup} warm-up steps per loop, then {last - args.warmup} measured (launch) and "
              f"{args.baseline_steps} (DDP) and {args.engine_steps} (no Ray)", flush=True)
        step_log = os.path.join(tmp, "launch.steps")
        # The loops without Ray run while no Ray instance is up (its start-up and idle processes are
        # the launch's cost, not the baseline's); the DDP loop runs before and after the launch.
        job = JobCpu()
        try:
            half, n = args.baseline_steps // 2, args.baseline_steps
            first, cpu1 = run_two_processes(ddp_worker, "DDP, first half", cfg, prompts, half, args.warmup, tmp, "ddp1", job)
            engine = None
            if not args.no_engine:
                engine, _ = run_two_processes(engine_worker, f"sa_train DiffusionTask, DeepSpeed ZeRO-{args.zero_stage}, "
                                              "no Ray, fixed batch", cfg, prompts, args.engine_steps, args.warmup, tmp,
                                              "engine", job)
            start_ray(step_log)
            try:
                run = run_launch(cfg, step_log, args.warmup, last, job)
            finally:
                import ray

                ray.shutdown()
            second, cpu2 = run_two_processes(ddp_worker, "DDP, second half", cfg, prompts, n - half, args.warmup,
                                             tmp, "ddp2", job)
        finally:
            job.close()
        bare = merge("bare DDP loop (2 spawned processes, gloo)", [first, second])
        ddp_cpu = {k: (cpu1.get(k, 0) * half + cpu2.get(k, 0) * (n - half)) / n for k in set(cpu1) | set(cpu2)}
        load = max(load_before, os.getloadavg()[0])
        print("\n".join(loops_table(bare, [first, second], engine, run) + parts_table(bare, engine, run)
                        + job_cpu_table(run, ddp_cpu, os.cpu_count() or 1, stream)))
    ratio, median_ratio = run.rank0.mean / bare.mean, run.rank0.median / bare.median
    print(f"sa_train's demo diffusion step: {ratio:.2f}x the bare DDP loop's mean step time, {median_ratio:.2f}x "
          f"its median: {verdict(ratio, median_ratio)}")
    record(results_line(args, params, bare, engine, run, ddp_cpu, load), append=not args.no_append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
