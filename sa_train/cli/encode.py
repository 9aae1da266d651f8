"""`sa-train encode CONFIG --autoencoder EXPORTED --out URI`: pre-encode a dataset into latent shards."""

from __future__ import annotations

import argparse

from sa_train.cli.common import add_config_arguments, resolve_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "encode", help="pre-encode the dataset of CONFIG into latent shards with an exported autoencoder",
        description="A Ray Data job: one encoder actor per GPU (per CPU without GPUs) writes versioned shards "
        "(float16 latents of every whole file, its real length, prompt, seconds_total, source path, the "
        "autoencoder's identity). Long files are encoded in chunks of data.encode_chunk_samples with enough "
        "context that the seams match a whole-file encode. Re-running skips shards already written. Train on "
        "them with data.latents=OUT: each epoch draws a new crop of every file.",
    )
    add_config_arguments(parser)
    parser.add_argument("--autoencoder", required=True, help="exported autoencoder folder (sa-train export)")
    parser.add_argument("--out", required=True, help="folder or URI (s3://, gs://) for the shards")
    parser.add_argument("--batch-size", type=int, default=8, help="clips encoded per forward pass (default 8)")
    parser.add_argument("--actors", type=int, help="encoder actors (default: one per GPU, else one per CPU)")
    parser.add_argument(
        "--context-frames", type=int,
        help="latent frames of context on each side of a chunk of a long file (default: the encoder's receptive field)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    if cfg is None:
        return 0
    from sa_train.data.encode import run_encode
    from sa_train.data.encode_chunks import context_frames_for
    from sa_train.export import encoder_factory, load_exported

    exported = load_exported(args.autoencoder, expect_stage="autoencoder")
    downsampling = exported.model.downsampling
    context = args.context_frames
    if context is None:
        context = context_frames_for(getattr(exported.model, "encoder", exported.model), downsampling)
    if context < 0:
        raise ValueError(f"--context-frames={context} must be >= 0")
    summary = run_encode(cfg.data, encoder_factory(args.autoencoder), exported.identity, args.out, downsampling,
                         batch_size=args.batch_size, num_actors=args.actors, context_frames=context)
    print(f"encoded {summary.examples} examples: {len(summary.shards_written)} shards written, "
          f"{len(summary.shards_skipped)} already there, into {args.out} (autoencoder {exported.identity})")
    return 0
