"""`sa-train demo`: the embedded default, end to end on this machine."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator, TextIO

from sa_train.demo import DemoSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="synthetic data -> tiny VAE -> tiny diffusion model -> WAVs, on a local Ray with 2 CPU workers",
        description="Runs the embedded default end to end with nothing to download, and prints where the "
        "models, the generated audio and the MLflow store are.",
    )
    parser.add_argument("--workdir", default="demo", help="folder for data, runs, MLflow store and audio (default ./demo)")
    parser.add_argument("--num-files", type=int, default=48, help="synthetic files to write (default 48)")
    parser.add_argument("--autoencoder-steps", type=int, default=DemoSettings.autoencoder_steps,
                        help=f"autoencoder training steps (default {DemoSettings.autoencoder_steps})")
    parser.add_argument("--diffusion-steps", type=int, default=DemoSettings.diffusion_steps,
                        help=f"diffusion training steps (default {DemoSettings.diffusion_steps})")
    parser.add_argument("--sample-steps", type=int, default=50, help="sampler steps per generated clip (default 50)")
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers (default 2)")
    parser.add_argument("--zero-stage", type=int, choices=[0, 1, 2, 3], default=2, help="DeepSpeed ZeRO stage (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, models and sampling")
    parser.add_argument("--verbose", dest="demo_verbose", action="store_true",
                        help="show Ray's, DeepSpeed's and the workers' output on the terminal instead of only in "
                        "the log files")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides applied to both stages")
    parser.set_defaults(func=run)


@contextlib.contextmanager
def details_to_file(path: Path) -> Iterator[TextIO]:
    """Everything logged, and whatever Ray, DeepSpeed and C++ libraries write to stderr, goes to
    ``path``; yields the terminal's stderr, where sa_train's own warnings still appear."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    terminal = os.fdopen(os.dup(2), "w", buffering=1)
    log = open(path, "a", buffering=1)
    os.dup2(log.fileno(), 2)  # the process's stderr, for everything that writes there directly
    root = logging.getLogger()
    saved_handlers = list(root.handlers)
    for handler in saved_handlers:
        root.removeHandler(handler)
    to_file = logging.StreamHandler(log)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    to_terminal = logging.StreamHandler(terminal)
    to_terminal.setLevel(logging.WARNING)
    to_terminal.addFilter(logging.Filter("sa_train"))
    to_terminal.setFormatter(logging.Formatter("      warning: %(message)s"))
    root.addHandler(to_file)
    root.addHandler(to_terminal)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)  # library warnings (deprecations and the like) into the file
    try:
        yield terminal
    finally:
        sys.stderr.flush()
        os.dup2(terminal.fileno(), 2)
        for handler in (to_file, to_terminal):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        log.close()


def run(args: argparse.Namespace) -> int:
    from sa_train.config import ConfigError
    from sa_train.demo import DemoSettings, run_demo, summary

    verbose = bool(args.verbose or args.demo_verbose)
    settings = DemoSettings(
        workdir=Path(args.workdir), num_files=args.num_files, autoencoder_steps=args.autoencoder_steps,
        diffusion_steps=args.diffusion_steps, sample_steps=args.sample_steps, num_workers=args.workers,
        zero_stage=args.zero_stage, seed=args.seed, verbose=verbose, overrides=list(args.overrides),
    )
    if verbose:
        print(summary(run_demo(settings)))
        return 0
    log_file = Path(args.workdir).resolve() / "demo.log"
    print(f"sa_train demo: details are logged to {log_file} (--verbose shows them here)")
    with details_to_file(log_file) as terminal:
        try:
            result = run_demo(settings)
        except ConfigError:
            raise  # the CLI prints it (exit 2) once the terminal is restored
        except Exception as err:  # noqa: BLE001 - the traceback is in the log; the terminal gets the cause
            logging.getLogger("sa_train.demo").exception("the demo failed")
            print(f"sa-train demo failed: {type(err).__name__}: {err}\n(the traceback and Ray's logs: {log_file})",
                  file=terminal)
            return 1
    print(summary(result))
    return 0
