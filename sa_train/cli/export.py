"""`sa-train export RUN_OR_CHECKPOINT --out DIR`: portable safetensors weights and the resolved config."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a run's latest complete checkpoint (or a given checkpoint) as safetensors + config",
        description="Writes config.yaml, model.safetensors (raw fp32), ema.safetensors and meta.json into --out; "
        "the result loads with no DeepSpeed and no Ray.",
    )
    parser.add_argument("source", help="run folder (storage.path/<run name>) or one checkpoint folder (holds state.json)")
    parser.add_argument("--out", required=True, help="folder to write the exported model into")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sa_train.export import export_checkpoint, load_exported

    out = export_checkpoint(args.source, args.out)
    exported = load_exported(out, weights="raw")  # prove it loads strictly before saying it worked
    print(f"exported {exported.meta['stage']} model (step {exported.meta['step']}, identity {exported.identity}) to {out}")
    return 0
