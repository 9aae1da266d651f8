"""`sa-train export RUN_OR_CHECKPOINT --out DIR [--format sat] [--register NAME]`: portable safetensors
weights and the resolved config, or a stable-audio-tools checkpoint (sa_train.interop.to_sat); local
folders or s3:// / gs:// URIs on either side. ``--register`` also logs the export as an MLflow model and
registers it (`sa-train register`)."""

from __future__ import annotations

import argparse
import sys

from sa_train.cli.register import add_mlflow_arguments, log_and_register


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a run's latest complete checkpoint (or a given checkpoint) as safetensors + config",
        description="Writes config.yaml, model.safetensors (raw fp32), ema.safetensors and meta.json into --out; "
        "the result loads with no DeepSpeed and no Ray.",
    )
    parser.add_argument("source", help="run folder (storage.path/<run name>) or one checkpoint folder (holds "
                        "state.json); a local path or an s3:// / gs:// URI")
    parser.add_argument("--out", required=True, help="folder or s3:// / gs:// URI to write the exported model into")
    parser.add_argument(
        "--format", default="sa_train", choices=["sa_train", "sat"],
        help="sa_train (default): this project's export; sat: a stable-audio-tools checkpoint (model.safetensors + "
        "model_config.json) for its inference tools. SOURCE may then also be an exported folder",
    )
    parser.add_argument(
        "--weights", default="ema", choices=["ema", "raw"],
        help="with --format sat: which weights to write (ema when the run kept one, else raw)",
    )
    parser.add_argument("--register", metavar="NAME",
                        help="also log the exported diffusion model as an MLflow model and register it as NAME, "
                        "with lineage tags (see `sa-train register`)")
    add_mlflow_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sa_train.export import export_checkpoint, load_exported

    if args.format == "sat":
        from sa_train.config import ConfigError
        from sa_train.interop.to_sat import export_sat

        try:
            out = export_sat(args.source, args.out, weights=args.weights)
        except ConfigError:
            raise  # the CLI's own config-error report (a model stable-audio-tools cannot compute)
        except ValueError as err:
            print(f"sa-train export: {err}", file=sys.stderr)
            return 2
        print(f"exported a stable-audio-tools checkpoint to {out}")
        return 0

    try:
        out = export_checkpoint(args.source, args.out)
    except ValueError as err:
        print(f"sa-train export: {err}", file=sys.stderr)
        return 2
    exported = load_exported(out, weights="raw")  # prove it loads strictly before saying it worked
    print(f"exported {exported.meta['stage']} model (step {exported.meta['step']}, identity {exported.identity}) to {out}")
    if args.register:
        return log_and_register(str(out), args.register, args.mlflow_run_id, args.tracking_uri)
    return 0
