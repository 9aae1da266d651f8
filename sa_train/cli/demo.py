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
    parser.add_argument("--verbose", dest="demo_verbose", action="store_true",
                        help="show Ray's, DeepSpeed's and the workers' output on the terminal instead of only in "
                        "the log files")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides applied to both stages")
    parser.set_defaults(func=run)


def log_to_file(path: Path) -> None:
    """Everything logged goes to ``path``; the terminal keeps sa_train's warnings and errors."""
    import logging

    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    to_file = logging.FileHandler(path)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    to_terminal = logging.StreamHandler()
    to_terminal.setLevel(logging.WARNING)
    to_terminal.addFilter(logging.Filter("sa_train"))
    to_terminal.setFormatter(logging.Formatter("      warning: %(message)s"))
    root.addHandler(to_file)
    root.addHandler(to_terminal)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)  # library warnings (deprecations and the like) into the file


def run(args: argparse.Namespace) -> int:
    from sa_train.demo import DemoSettings, run_demo, summary

    verbose = bool(args.verbose or args.demo_verbose)
    if not verbose:
        log_file = Path(args.workdir).resolve() / "demo.log"
        log_to_file(log_file)
        print(f"sa_train demo: details are logged to {log_file} (--verbose shows them here)")
    settings = DemoSettings(
        workdir=Path(args.workdir), num_files=args.num_files, autoencoder_steps=args.autoencoder_steps,
        diffusion_steps=args.diffusion_steps, sample_steps=args.sample_steps, num_workers=args.workers,
        zero_stage=args.zero_stage, seed=args.seed, verbose=verbose, overrides=list(args.overrides),
    )
    print(summary(run_demo(settings)))
    return 0
