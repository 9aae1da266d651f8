"""`sa-train demo`: the embedded default, end to end on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="synthetic data -> tiny VAE -> tiny diffusion model -> WAVs, on a local Ray with 2 CPU workers",
        description="Runs the embedded default end to end with nothing to download, and prints where the "
        "models, the generated audio and the MLflow store are.",
    )
    parser.add_argument("--workdir", default="demo", help="folder for data, runs, MLflow store and audio (default ./demo)")
    parser.add_argument("--num-files", type=int, default=48, help="synthetic files to write (default 48)")
    parser.add_argument("--autoencoder-steps", type=int, default=100, help="autoencoder training steps (default 100)")
    parser.add_argument("--diffusion-steps", type=int, default=200, help="diffusion training steps (default 200)")
    parser.add_argument("--sample-steps", type=int, default=50, help="sampler steps per generated clip (default 50)")
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers (default 2)")
    parser.add_argument("--zero-stage", type=int, choices=[0, 1, 2, 3], default=2, help="DeepSpeed ZeRO stage (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, models and sampling")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides applied to both stages")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sa_train.demo import DemoSettings, run_demo, summary

    settings = DemoSettings(
        workdir=Path(args.workdir), num_files=args.num_files, autoencoder_steps=args.autoencoder_steps,
        diffusion_steps=args.diffusion_steps, sample_steps=args.sample_steps, num_workers=args.workers,
        zero_stage=args.zero_stage, seed=args.seed, overrides=list(args.overrides),
    )
    print(summary(run_demo(settings)))
    return 0
