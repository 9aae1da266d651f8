"""`sa-train import-sat CHECKPOINT --config MODEL_CONFIG.json --out DIR`: a stable-audio-tools
checkpoint as sa_train exports (see sa_train.interop.sat)."""

from __future__ import annotations

import argparse
import sys

EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-sat",
        help="import a stable-audio-tools checkpoint (autoencoder dac/oobleck, U-Net adp_cfg_1d) as sa_train exports",
        description="Reads a stable-audio-tools .ckpt (Lightning-wrapped or unwrapped) or .safetensors with its "
        "model_config.json and writes sa_train exports that give the same outputs: an autoencoder checkpoint into "
        "--out; a text-to-audio checkpoint into --out/autoencoder and --out/diffusion (or one of them with --part). "
        "Unsupported model types are refused with their name.",
    )
    parser.add_argument("checkpoint", help="stable-audio-tools checkpoint: .ckpt (weights-only loading) or .safetensors")
    parser.add_argument("--config", required=True, help="the stable-audio-tools model_config.json of the checkpoint")
    parser.add_argument("--out", required=True, help="folder to write the export(s) into")
    parser.add_argument(
        "--part", default="all", choices=["all", "autoencoder", "diffusion"],
        help="what to import from a text-to-audio checkpoint: all (default), its autoencoder (pretransform) alone "
        "into --out, or its diffusion model alone into --out (then set model.autoencoder.pretrained=...)",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="an sa_train config override applied to the imported config (repeatable), e.g. "
        "--set model.conditioning.text_encoder.name_or_path=/models/t5-base",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sa_train.config import ConfigError
    from sa_train.interop.sat import import_sat

    try:
        written = import_sat(args.checkpoint, args.config, args.out, part=args.part, overrides=args.overrides)
    except ConfigError:
        raise  # the CLI's own config-error report
    except ValueError as err:  # an unreadable file, weights that do not match the config: the message says which
        print(f"sa-train import-sat: {err}", file=sys.stderr)
        return EXIT_USAGE
    for folder in written:
        print(f"imported {folder}")
    return 0
