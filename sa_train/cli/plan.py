"""`sa-train plan CONFIG [key=value ...]`: parameters, FLOPs, memory per GPU, time and cost of a run."""

from __future__ import annotations

import argparse
import json
import logging

from sa_train.cli.common import add_config_arguments, resolve_config

logger = logging.getLogger(__name__)

# Kept here too (not imported from sa_train.planning) so that `--help` does not import torch.
GPU_CHOICES = ("a100", "h100", "h200", "l4")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]: give the fraction of the peak, e.g. 0.4")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="parameters, FLOPs, memory per GPU, time and cost estimate of a config",
        description="Count parameters per component and the FLOPs of one training step (torch's FLOP "
        "counter on meta tensors: no memory, no download), estimate memory per GPU for each DeepSpeed "
        "ZeRO stage, and the time and cost of the configured steps on the configured number of GPUs.",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--gpu", choices=GPU_CHOICES, default="a100",
        help="GPU whose dense bf16 peak the time estimate uses: a100 312, h100 989, h200 989, l4 121 TFLOP/s "
        "(default: a100)",
    )
    parser.add_argument(
        "--peak-tflops", type=_positive, default=None, metavar="TFLOPS",
        help="override the GPU's bf16 peak in TFLOP/s (for a GPU not in the --gpu table)",
    )
    parser.add_argument(
        "--utilization", type=_fraction, default=0.4, metavar="FRACTION",
        help="fraction of the bf16 peak a real run sustains, an assumption (default: 0.4)",
    )
    parser.add_argument(
        "--price-per-gpu-hour", type=_non_negative, default=4.1, metavar="USD",
        help="price of one GPU hour for the cost estimate, an assumption (default: 4.1, about an on-demand A100)",
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON instead of tables")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    if cfg is None:
        return 0
    from sa_train.planning import format_plan, make_plan

    plan = make_plan(
        cfg,
        config_path=args.config,
        gpu=args.gpu,
        utilization=args.utilization,
        price_per_gpu_hour=args.price_per_gpu_hour,
        peak_tflops=args.peak_tflops,
    )
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print(format_plan(plan), end="")
    return 0
