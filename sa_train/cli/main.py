"""The `sa-train` command line: one subcommand module each, registered here.

Each subcommand module exposes ``register(subparsers)``, which adds its parser with help text for
every flag and sets ``func`` to a function ``(args) -> exit code``. Heavy imports (torch, ray)
happen inside those functions, so `--help` and config errors answer in a moment.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from sa_train.config import ConfigError

# Subcommand modules in the order `sa-train --help` lists them.
SUBCOMMAND_MODULES = (
    "sa_train.cli.demo",
    "sa_train.cli.train",
    "sa_train.cli.sweep",
    "sa_train.cli.encode",
    "sa_train.cli.export",
    "sa_train.cli.register",
    "sa_train.cli.import_sat",
    "sa_train.cli.generate",
    "sa_train.cli.evaluate",
    "sa_train.cli.data",
    "sa_train.cli.plan",
)

EXIT_CONFIG_ERROR = 2


def _subcommand_modules() -> list:
    """Every subcommand module; one that cannot be imported stops the CLI with its name and cause."""
    modules = []
    for name in SUBCOMMAND_MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ImportError as err:
            raise SystemExit(
                f"sa-train: the subcommand module {name} cannot be imported ({type(err).__name__}: {err}). "
                "The installation is incomplete or broken: reinstall from the lock (make install), and run "
                "`python -m sa_train.cli.stack_check` to see which package fails to load."
            ) from err
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sa-train",
        description="Train Stable Audio-style text-to-audio diffusion models, from a laptop to a Ray cluster.",
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _subcommand_modules():
        module.register(subparsers)
    return parser


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"sa-train: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except KeyboardInterrupt:
        print("sa-train: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
