"""`sa-train encode CONFIG --autoencoder EXPORTED --out URI`: pre-encode a dataset into latent shards."""

from __future__ import annotations

import argparse

from sa_train.cli.common import add_config_arguments, resolve_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "encode", help="pre-encode the dataset of CONFIG into latent shards with an exported autoencoder",
        description="A Ray Data job: one encoder actor per GPU (per CPU without GPUs) writes versioned shards "
        "(float16 latents, padding mask, prompt, seconds_start/total, source path, the autoencoder's identity). "
        "Re-running skips shards already written. Train on them with data.latents=OUT.",
    )
    add_config_arguments(parser)
    parser.add_argument("--autoencoder", required=True, help="exported autoencoder folder (sa-train export)")
    parser.add_argument("--out", required=True, help="folder or URI (s3://, gs://) for the shards")
    parser.add_argument("--batch-size", type=int, default=8, help="clips encoded per forward pass (default 8)")
    parser.add_argument("--actors", type=int, help="encoder actors (default: one per GPU, else one per CPU)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    if cfg is None:
        return 0
    from sa_train.data.encode import run_encode
    from sa_train.export import encoder_factory, load_exported

    exported = load_exported(args.autoencoder, expect_stage="autoencoder")
    summary = run_encode(cfg.data, encoder_factory(args.autoencoder), exported.identity, args.out,
                         exported.model.downsampling, batch_size=args.batch_size, num_actors=args.actors)
    print(f"encoded {summary.examples} examples: {len(summary.shards_written)} shards written, "
          f"{len(summary.shards_skipped)} already there, into {args.out} (autoencoder {exported.identity})")
    return 0
