"""`sa-train evaluate GENERATED --reference REF`: metrics for a folder of generated audio."""

from __future__ import annotations

import argparse
import json

EXIT_USER_ERROR = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="score generated audio: FD, KL, CLAP score, timing accuracy, prompt adherence",
        description="Reads GENERATED/manifest.jsonl (path, prompt, seconds_total per clip, as `sa-train generate` "
        "writes it; any generator's output works) and writes evaluation.json, evaluation.md and timing.png. "
        "The built-in embedder (spectral) and tagger (synth_kind) are proxies that need no downloads; their "
        "numbers are comparable with each other, not with the paper's FD_openl3 / KL_passt.",
    )
    parser.add_argument("generated", metavar="GENERATED", help="folder of generated audio with manifest.jsonl")
    parser.add_argument("--reference", help="reference audio folder (manifest.jsonl with prompts enables KL) "
                        "or a reference stats file (.npz, FD only); without it FD and KL are skipped")
    parser.add_argument("--embedder", default="spectral", choices=["spectral", "openl3", "none"],
                        help="frame embedder for FD: spectral (built-in proxy, default), openl3 (needs the "
                        "openl3 package), none (skip FD)")
    parser.add_argument("--tagger", default="synth_kind", choices=["synth_kind", "passt", "none"],
                        help="class tagger for KL: synth_kind (built-in, the synthetic dataset's kinds; default), "
                        "passt (needs hear21passt, fetches its weights on first use), none (skip KL)")
    parser.add_argument("--clap", metavar="HUB_ID_OR_FOLDER",
                        help="CLAP model for the CLAP score (transformers ClapModel), e.g. a local folder or "
                        "laion/clap-htsat-unfused (downloads it); without it the CLAP score is skipped")
    parser.add_argument("--cache-dir", help="where reference statistics are cached "
                        "(default $SA_TRAIN_CACHE/reference_stats or ~/.cache/sa_train/reference_stats)")
    parser.add_argument("--timing-bins", type=float, nargs="+", metavar="SECONDS",
                        help="edges of the requested-length bins for timing errors (default: 1 s bins for "
                        "short clips, 10 s bins from 20 s up)")
    parser.add_argument("--device", default="cpu", help="torch device for the CLAP and PaSST models (default cpu)")
    parser.add_argument("--out", help="folder for the reports (default GENERATED/evaluation)")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from sa_train.evaluation.embedders import build_tagger, build_text_audio_embedder
    from sa_train.evaluation.evaluate import run_evaluation

    try:
        tagger = None if args.tagger == "none" else build_tagger(args.tagger, **(
            {"device": args.device} if args.tagger == "passt" else {}))
        clap = build_text_audio_embedder(args.clap, device=args.device) if args.clap else None
        result = run_evaluation(
            args.generated, reference=args.reference, embedder=None if args.embedder == "none" else args.embedder,
            tagger=tagger, clap=clap, cache_dir=args.cache_dir, out_dir=args.out, timing_bins=args.timing_bins,
        )
    except ValueError as err:
        print(f"sa-train evaluate: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    if args.json:
        print(json.dumps(result.metrics, sort_keys=True))
        return 0
    width = max(len(k) for k in result.metrics)
    for name, value in result.metrics.items():
        print(f"{name:<{width}}  {value:.4f}")
    for note in result.notes:
        print(f"note: {note}")
    print(f"reports: {', '.join(result.files.values())}")
    return 0
