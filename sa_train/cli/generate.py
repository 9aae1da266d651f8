"""`sa-train generate MODEL --prompt ... --seconds ...`: WAV files from an exported diffusion model.

MODEL, --prompts-file and --out may be local paths or s3:// / gs:// URIs: a remote model is
downloaded to a temporary folder, and remote output is written locally first, then uploaded."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate", help="generate audio from an exported diffusion model",
        description="Writes one WAV per prompt (trimmed to --seconds unless --full-window) and a manifest.jsonl "
        "with prompts and requested durations, ready for `sa-train evaluate`.",
    )
    parser.add_argument("model", help="exported diffusion model (sa-train export): a folder or an s3:// / gs:// URI")
    parser.add_argument("--prompt", action="append", default=[], help="a text prompt (repeat for several)")
    parser.add_argument("--prompts-file", help="text file (path or URI) with one prompt per line, or JSONL with prompt/seconds_total")
    parser.add_argument("--seconds", type=float, action="append", default=[],
                        help="seconds_total per prompt (repeat; one value applies to all)")
    parser.add_argument("--seconds-start", type=float, default=0.0, help="seconds_start conditioning (default 0)")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the model's model.sampling.steps)")
    parser.add_argument("--sampler", choices=["ddim", "dpmpp-2m", "dpmpp-2m-sde", "dpmpp-3m-sde"], help="sampler")
    parser.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale")
    parser.add_argument("--seed", type=int, help="seed of the initial noise")
    parser.add_argument("--batch-size", type=int, default=4, help="prompts generated per batch")
    parser.add_argument("--weights", choices=["ema", "raw"], default="ema", help="EMA (default) or raw weights")
    parser.add_argument("--full-window", action="store_true", help="keep the whole window instead of trimming")
    parser.add_argument("--allow-mismatch", action="store_true",
                        help="load weights that do not match the model's config (missing ones keep their initial "
                        "values); every missing and unexpected key is logged")
    parser.add_argument("--device", default="auto", help="torch device; 'auto' = cuda when available, else cpu")
    parser.add_argument("--out", required=True, help="folder or s3:// / gs:// URI for the WAV files and manifest.jsonl")
    parser.set_defaults(func=run)


def read_requests(args: argparse.Namespace) -> list[tuple[str, float]]:
    prompts = list(args.prompt)
    seconds = list(args.seconds)
    if args.prompts_file:
        for line in _read_text(args.prompts_file).splitlines():
            if not line.strip():
                continue
            if line.lstrip().startswith("{"):
                row = json.loads(line)
                prompts.append(row["prompt"])
                seconds.append(float(row.get("seconds_total", seconds[0] if seconds else 0)))
            else:
                prompts.append(line.strip())
    if not prompts:
        raise SystemExit("sa-train generate: give at least one --prompt or --prompts-file")
    if not seconds:
        raise SystemExit("sa-train generate: give --seconds (seconds_total of the generated audio)")
    if len(seconds) == 1:
        seconds = seconds * len(prompts)
    if len(seconds) != len(prompts):
        raise SystemExit(f"sa-train generate: {len(prompts)} prompts but {len(seconds)} --seconds values")
    return list(zip(prompts, seconds))


def _read_text(location: str) -> str:
    if "://" not in location:
        return Path(location).read_text()
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(location)
    with fs.open_input_stream(path) as stream:
        return stream.read().decode()


def run(args: argparse.Namespace) -> int:
    import tempfile

    if "://" not in args.out:
        return _generate(args, Path(args.out))
    from sa_train.export import upload_folder

    with tempfile.TemporaryDirectory(prefix="sa_train_generated_") as tmp:
        code = _generate(args, Path(tmp))
        if code == 0:
            upload_folder(tmp, args.out)
            print(f"uploaded them to {args.out}")
        return code


def _generate(args: argparse.Namespace, out: Path) -> int:
    import dataclasses

    from tqdm import tqdm

    from sa_train.generation import Generator, write_clips, write_manifest

    import torch

    requests = read_requests(args)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        generator = Generator.from_exported(args.model, device=device, weights=args.weights,
                                            allow_mismatch=args.allow_mismatch)
    except ValueError as err:
        print(f"sa-train generate: {err}", file=sys.stderr)
        return 2
    sampling = generator.cfg.model.sampling
    changes = {k: v for k, v in {"steps": args.steps, "sampler": args.sampler, "cfg_scale": args.cfg_scale,
                                 "seed": args.seed}.items() if v is not None}
    sampling = dataclasses.replace(sampling, **changes)
    max_seconds = generator.cfg.data.window_samples / generator.cfg.data.sample_rate
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    bar = tqdm(total=len(requests) * sampling.steps, desc="sampling", unit="step", disable=None)
    for first in range(0, len(requests), args.batch_size):
        chunk = requests[first : first + args.batch_size]
        if any(s > max_seconds for _, s in chunk):
            logger.warning("seconds_total above the model's window (%.2f s) is clipped to the window", max_seconds)
        batch_sampling = dataclasses.replace(sampling, seed=sampling.seed + first)
        clips = generator.generate(
            [p for p, _ in chunk], [s for _, s in chunk], [args.seconds_start] * len(chunk), batch_sampling,
            trim=not args.full_window, callback=lambda info: bar.update(1),
        )
        rows += write_clips(clips, out, first_index=first)
    bar.close()
    write_manifest(rows, out)
    print(f"wrote {len(rows)} WAV files and manifest.jsonl to {out}")
    return 0
