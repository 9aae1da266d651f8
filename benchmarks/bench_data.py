"""Data benchmark: how fast decoded-and-cropped audio and pre-encoded latents reach training.

Writes the synthetic dataset into a temporary folder, then measures in one run:

1. raw soundfile decoding of every file (the limit), in audio seconds per second on one core;
2. the same files through the decode-and-crop code (``iter_local_batches``), one core;
3. the Ray Data pipeline (``build_audio_dataset``) on a local Ray instance, per core used;
4. reading pre-encoded latent shards (``iter_local_latent_batches``) against decoding audio,
   per training example (the encoder is a stand-in: reading speed does not depend on it).

On a shared machine wall-clock rates swing with the load of other processes, so 1 and 2 run
interleaved, best of ``--repeats``, and are also given per CPU second (process time); the Ray
figure is given per core of wall time and per CPU second of its decode tasks (from Ray Data's
stats), the latter being what a dedicated core would deliver.

Targets (issue 4): pipeline >= 0.8x raw decode per core; latents >= 20x faster per example.
Prints the figures and appends a dated line to benchmarks/RESULTS.md.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_data.py --num 64
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import sys
import tempfile
import time

import soundfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sa_train.data.config import DataConfig  # noqa: E402
from sa_train.data.encode import DecodedRows, encode_to_shards  # noqa: E402
from sa_train.data.latents import iter_local_latent_batches  # noqa: E402
from sa_train.data.pipeline import build_audio_dataset, iter_local_batches, load_records  # noqa: E402
from sa_train.data.synth import write_synth_dataset  # noqa: E402

logger = logging.getLogger("bench_data")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
DOWNSAMPLING = 1024


def raw_decode(paths: list[str], epochs: int) -> tuple[float, float, float, int]:
    """(audio seconds, wall seconds, CPU seconds, files) of soundfile.read over every file."""
    audio_seconds, start, cpu = 0.0, time.perf_counter(), time.process_time()
    for _ in range(epochs):
        for path in paths:
            data, rate = soundfile.read(path, dtype="float32", always_2d=True)
            audio_seconds += data.shape[0] / rate
    return audio_seconds, time.perf_counter() - start, time.process_time() - cpu, epochs * len(paths)


def local_pipeline(cfg: DataConfig, records, epochs: int) -> tuple[float, float, float, int]:
    """(real audio seconds, wall seconds, CPU seconds, examples) through the decode-and-crop code."""
    audio_seconds, examples, start, cpu = 0.0, 0, time.perf_counter(), time.process_time()
    for batch in iter_local_batches(cfg, 16, seed=0, epochs=epochs, records=records):
        audio_seconds += batch.padding_mask.sum().item() / cfg.sample_rate
        examples += len(batch)
    return audio_seconds, time.perf_counter() - start, time.process_time() - cpu, examples


def best_of(repeats: int, *runs):
    """Run each zero-argument callable ``repeats`` times, interleaved; the fastest result of each."""
    best = [None] * len(runs)
    for _ in range(repeats):
        for i, run in enumerate(runs):
            result = run()
            if best[i] is None or result[1] < best[i][1]:
                best[i] = result
    return best


def _decode_cpu_seconds(stats: str) -> float:
    """Total remote CPU time of the decode operator, from Ray Data's stats text."""
    in_decode = False
    for line in stats.splitlines():
        if line.startswith("Operator"):
            in_decode = "_decode_batch" in line
        elif in_decode and "Remote cpu time" in line:
            value = line.rsplit(",", 1)[1].split()[0]
            return float(value[:-2]) / 1000 if value.endswith("ms") else float(value[:-1])
    return float("nan")


def ray_pipeline(cfg: DataConfig, records, epochs: int, cpus: int, repeats: int) -> tuple[float, float, float]:
    """(real audio seconds, wall seconds, decode-task CPU seconds) of the fastest of ``repeats``
    passes through the Ray Data pipeline, after one pass that warms up workers and imports."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        ds = build_audio_dataset(cfg, seed=0, epochs=epochs, records=records)
        for _ in ds.iter_batches(batch_size=16, batch_format="numpy"):
            pass
        best = None
        for _ in range(repeats):
            audio_seconds, start = 0.0, time.perf_counter()
            for batch in ds.iter_batches(batch_size=16, batch_format="numpy"):
                audio_seconds += batch["padding_mask"].sum() / cfg.sample_rate
            wall = time.perf_counter() - start
            if best is None or wall < best[1]:
                best = (float(audio_seconds), wall, _decode_cpu_seconds(ds.stats()))
        return best
    finally:
        ray.shutdown()


def pooling_encoder(audio):
    import torch

    pooled = audio.reshape(*audio.shape[:2], -1, DOWNSAMPLING).mean(-1)
    return torch.cat([pooled] * 8, dim=1)  # 16 latent channels, as the tiny autoencoder


def latent_reading(cfg: DataConfig, records, folder: str, epochs: int) -> tuple[float, int]:
    """(wall seconds, examples) reading latent crops of the encoded dataset."""
    rows = DecodedRows([r.path for r in records], [r.prompt for r in records], cfg, cfg.window_samples)
    encode_to_shards(rows, pooling_encoder, "bench", folder, 64, downsampling=DOWNSAMPLING, sample_rate=cfg.sample_rate)
    cfg.latents = folder
    examples, start = 0, time.perf_counter()
    for batch in iter_local_latent_batches(cfg, "bench", 16, seed=0, epochs=epochs):
        examples += len(batch)
    return time.perf_counter() - start, examples


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num", type=int, default=64, help="synthetic files (default 64)")
    parser.add_argument("--epochs", type=int, default=2, help="passes over the files per measurement (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats, best kept (default 3)")
    parser.add_argument("--format", choices=["flac", "wav"], default="flac", help="file format (default flac)")
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray instance (default 2)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray Data measurement")
    parser.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        audio_dir = os.path.join(tmp, "synth")
        write_synth_dataset(audio_dir, args.num, seed=0, fmt=args.format)
        cfg = DataConfig(sources=[audio_dir])
        records = load_records(cfg)
        paths = [r.path for r in records]

        (raw_s, raw_t, raw_cpu, _), (pipe_s, pipe_t, pipe_cpu, examples) = best_of(
            args.repeats, lambda: raw_decode(paths, args.epochs), lambda: local_pipeline(cfg, records, args.epochs)
        )
        raw_rate, pipe_rate = raw_s / raw_t, pipe_s / pipe_t
        raw_cpu_rate, pipe_cpu_rate = raw_s / raw_cpu, pipe_s / pipe_cpu
        print(f"files: {len(paths)} {args.format}, {raw_s / args.epochs:.1f} s of audio, {args.epochs} passes, "
              f"best of {args.repeats}")
        print(f"raw soundfile decode:   {raw_rate:8.1f} audio s/s wall (1 core), {raw_cpu_rate:8.1f} per CPU s")
        print(f"decode+crop, local:     {pipe_rate:8.1f} audio s/s wall (1 core), {pipe_cpu_rate:8.1f} per CPU s"
              f" = {pipe_rate / raw_rate:.2f}x / {pipe_cpu_rate / raw_cpu_rate:.2f}x raw")
        line = [f"raw {raw_rate:.0f} audio s/s/core",
                f"local pipeline {pipe_rate / raw_rate:.2f}x raw (wall), {pipe_cpu_rate / raw_cpu_rate:.2f}x (CPU)"]

        if not args.no_ray:
            ray_s, ray_t, ray_cpu = ray_pipeline(cfg, records, args.epochs, args.ray_cpus, args.repeats)
            per_core, per_cpu = ray_s / ray_t / args.ray_cpus, ray_s / ray_cpu
            print(f"decode+crop, Ray Data:  {per_core:8.1f} audio s/s wall per core ({args.ray_cpus} CPUs), "
                  f"{per_cpu:8.1f} per decode-task CPU s = {per_core / raw_rate:.2f}x / {per_cpu / raw_cpu_rate:.2f}x raw")
            line.append(f"Ray Data {per_core / raw_rate:.2f}x raw per core (wall, {args.ray_cpus} CPUs), "
                        f"{per_cpu / raw_cpu_rate:.2f}x (task CPU)")

        latent_t, latent_examples = latent_reading(cfg, records, os.path.join(tmp, "latents"), args.epochs)
        audio_per_example, latent_per_example = pipe_t / examples, latent_t / latent_examples
        speedup = audio_per_example / latent_per_example
        print(f"audio decode per example: {audio_per_example * 1e3:8.3f} ms")
        print(f"latent read per example:  {latent_per_example * 1e3:8.3f} ms = {speedup:.0f}x faster")
        line.append(f"latents {speedup:.0f}x faster per example")

    cores = os.cpu_count()
    entry = (f"- {datetime.date.today().isoformat()} bench_data ({args.num} {args.format} files, "
             f"{platform.machine()}, {cores} cores, load {os.getloadavg()[0]:.1f}): " + "; ".join(line))
    print(entry)
    if not args.no_append:
        new = not os.path.exists(RESULTS)
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write("# Benchmark results\n\nOne dated line per run, appended by the scripts in this folder.\n\n" if new else "")
            f.write(entry + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
