"""Manifest benchmark: time to the first batch and driver memory for an 800,000-row manifest.

Writes a few hundred real (short, synthetic) audio files and a JSONL manifest of ``--rows`` rows
pointing at them (every row its own caption, so the prompts are as many distinct strings as in a
real corpus), then measures, each in a fresh process with its own local Ray instance:

1. the Ray Data path (``data.manifest_reader=ray_data``): the driver checks the columns, Ray tasks
   read and check the rows into blocks, decode tasks fetch the blocks they need;
2. the driver path (``data.manifest_reader=driver``, what every manifest used before): every row
   becomes an AudioRecord on the driver, and the path and prompt lists are put in the object store
   for every decode process to load whole;
3. "before": the driver path as it was before the Ray Data path existed, also with the stream's
   old block layout (up to 20,000 range blocks, Ray Data's default 128 MB output blocks).

2 and 3 run at ``--baseline-rows`` (default: the same size); give fewer when the old path would not
fit, and the line says so.

For each: the seconds from "build the dataset" to the first decoded batch of 16 examples, the
part of it spent planning (reading the manifest), and the driver's peak RSS (its own process, not
Ray's) when it hands the dataset over (what a training driver holds), then after it has also
iterated the first batch itself (blocks a worker would hold), each over the RSS it had before
touching the data. The rows after the first batch are not read. Appends one line to
benchmarks/RESULTS.md.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_manifest.py --rows 800000 --files 300
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.results import cpu_model, record  # noqa: E402

BATCH = 16
WINDOW = 65536


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def write_corpus(folder: str, files: int, rows: int) -> str:
    """``files`` synthetic audio files under folder/audio and a manifest of ``rows`` rows over them."""
    from sa_train.data.synth import write_synth_dataset

    synth = write_synth_dataset(os.path.join(folder, "audio"), files, seed=0, max_seconds=3.0)
    manifest = os.path.join(folder, f"manifest-{rows}.jsonl")
    with open(manifest, "w", encoding="utf-8") as f:
        for i in range(rows):
            base = synth[i % files]
            row = {**base, "path": f"audio/{base['path']}", "caption": f"{base['caption']}, take {i}"}
            f.write(json.dumps(row) + "\n")
    return manifest


def child(reader: str, manifest: str) -> None:
    """One measurement, in this (fresh) process; prints a JSON line."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    import ray

    from sa_train.data import pipeline
    from sa_train.data.config import DataConfig
    from sa_train.data.pipeline import build_audio_dataset, load_files

    if reader == "before":  # the stream's block layout before this benchmark's change
        pipeline.MAX_STREAM_BLOCKS, pipeline.STREAM_BLOCK_EXAMPLES = 20_000, None

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    before = peak_rss_mb()
    cfg = DataConfig(sources=[manifest], manifest_reader="driver" if reader == "before" else reader,
                     window_samples=WINDOW, max_bad_fraction=0.5)
    start = time.perf_counter()
    files = load_files(cfg)
    planned = time.perf_counter()
    ds = build_audio_dataset(cfg, seed=0, epochs=1, records=files)
    handoff = peak_rss_mb()  # what the driver holds when it hands the dataset to the trainer
    batch = next(iter(ds.iter_batches(batch_size=BATCH, batch_format="numpy")))
    first = time.perf_counter()
    assert len(batch["prompt"]) == BATCH
    print(json.dumps({"reader": reader, "files": len(files), "plan_s": planned - start, "first_batch_s": first - start,
                      "rss_before_mb": before, "rss_handoff_mb": handoff, "rss_peak_mb": peak_rss_mb()}), flush=True)
    ray.shutdown()


def measure(reader: str, manifest: str, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", reader, manifest], env=env,
                         capture_output=True, text=True, timeout=timeout)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError(f"{reader} run failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(lines[-1])


def added(result: dict, key: str = "rss_handoff_mb") -> float:
    return result[key] - result["rss_before_mb"]


def describe(result: dict) -> str:
    return (f"{result['first_batch_s']:.1f} s to the first batch of {BATCH} (planning {result['plan_s']:.1f} s), "
            f"driver peak RSS {result['rss_handoff_mb']:.0f} MB when the dataset is handed over (+{added(result):.0f} "
            f"MB over the {result['rss_before_mb']:.0f} MB before; +{added(result, 'rss_peak_mb'):.0f} MB once it has "
            f"also iterated the first batch, as a worker would)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=800_000, help="manifest rows (default 800000)")
    parser.add_argument("--files", type=int, default=300, help="real audio files the rows point at (default 300)")
    parser.add_argument("--baseline-rows", type=int, default=None,
                        help="rows for the driver path (default: --rows; give fewer if it would not fit)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per measurement")
    parser.add_argument("--no-append", action="store_true", help="print only; do not append to RESULTS.md")
    parser.add_argument("--child", nargs=2, metavar=("READER", "MANIFEST"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    baseline_rows = args.baseline_rows or args.rows
    with tempfile.TemporaryDirectory(prefix="bench_manifest_") as folder:
        started = time.perf_counter()
        manifest = write_corpus(folder, args.files, args.rows)
        size_mb = os.path.getsize(manifest) / 2**20
        print(f"wrote {args.files} audio files and a {args.rows}-row manifest ({size_mb:.0f} MB) in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        load = os.getloadavg()[0]
        new = measure("ray_data", manifest, args.timeout)
        print("ray_data:", describe(new), flush=True)
        baseline_manifest = manifest
        if baseline_rows != args.rows:
            baseline_manifest = os.path.join(folder, f"baseline-{baseline_rows}.jsonl")
            with open(manifest, encoding="utf-8") as src, open(baseline_manifest, "w", encoding="utf-8") as dst:
                for _, line in zip(range(baseline_rows), src):
                    dst.write(line)
        old = measure("driver", baseline_manifest, args.timeout)
        print("driver:", describe(old), flush=True)
        before = measure("before", baseline_manifest, args.timeout)
        print("before:", describe(before), flush=True)
    same = baseline_rows == args.rows
    comparison = (
        f"; Ray Data path vs before: {new['first_batch_s'] / before['first_batch_s']:.2f}x the time to the first "
        f"batch, {added(new) / max(1.0, added(before)):.3f}x the driver's added memory" if same else
        f"; the driver paths were measured at {baseline_rows} rows only (not comparable size for size)"
    )
    record(
        f"- {datetime.date.today()} bench_manifest ({args.rows}-row JSONL manifest, {size_mb:.0f} MB, over "
        f"{args.files} real flac files, first batch of {BATCH} x {WINDOW} samples, local Ray 2 CPUs, fresh process "
        f"each; {cpu_model()}, {os.cpu_count()} cores, load {load:.1f}): Ray Data path (manifest_reader=ray_data) "
        f"{describe(new)}; driver path (manifest_reader=driver, {baseline_rows} rows) {describe(old)}; before (driver "
        f"path, old stream blocks, {baseline_rows} rows) {describe(before)}{comparison}",
        append=not args.no_append,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
