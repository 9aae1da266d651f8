"""`sa-train train CONFIG [key=value ...]`: one training run (autoencoder or diffusion stage)."""

from __future__ import annotations

import argparse
import logging

from sa_train.cli.common import add_config_arguments, resolve_config

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="one training run on Ray Train + DeepSpeed (local Ray, or the cluster in RAY_ADDRESS)",
        description="Train the autoencoder or the diffusion model described by CONFIG. A run with the same "
        "tracking.run_name and storage.path resumes from its last checkpoint and continues its MLflow run.",
    )
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)  # validated before Ray or any worker starts
    if cfg is None:
        return 0
    from sa_train.training.launcher import launch

    result = launch(cfg)
    print(result.summary())
    return 0
