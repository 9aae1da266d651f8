"""Arguments shared by the subcommands that take an experiment config."""

from __future__ import annotations

import argparse

from sa_train.config import ExperimentConfig, load_config, to_yaml


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment YAML (e.g. configs/experiments/tiny_diffusion.yaml)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="config overrides in dotted form, e.g. training.steps=100 distributed.num_workers=4",
    )
    parser.add_argument("--print-config", action="store_true", help="print the fully resolved config and exit")


def resolve_config(args: argparse.Namespace) -> ExperimentConfig | None:
    """Load and validate the config; print it and return None when --print-config was given."""
    cfg = load_config(args.config, args.overrides)
    if getattr(args, "print_config", False):
        print(to_yaml(cfg), end="")
        return None
    return cfg
