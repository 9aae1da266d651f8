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
                        help="frame embedder for FD: spectral (built-in proxy, default), openl3 (the paper's "
                        "FD_openl3; needs torchopenl3, the eval extra), none (skip FD)")
    parser.add_argument("--tagger", default="synth_kind", choices=["synth_kind", "passt", "none"],
                        help="class tagger for KL: synth_kind (built-in, the synthetic dataset's kinds; default), "
                        "passt (the paper's KL_passt; needs hear21passt, the eval extra), none (skip KL)")
    parser.add_argument("--openl3-weights", metavar="PATH",
                        help="OpenL3 weights: torchopenl3_mel256_music_512.pth.tar or a folder holding it (see "
                        "README, 'Metric model weights'); 'random' for seeded random weights (pipeline checks "
                        "only); default: download once into the torch hub cache")
    parser.add_argument("--passt-weights", metavar="PATH",
                        help="PaSST weights: passt-s-f128-p16-s10-ap.476-swa.pt or a folder holding it; 'random' "
                        "for seeded random weights (pipeline checks only); default: download once into the torch "
                        "hub cache")
    parser.add_argument("--clap", metavar="HUB_ID_OR_FOLDER",
                        help="CLAP model for the CLAP score (transformers ClapModel): a local folder saved from "
                        "laion/clap-htsat-fused (the paper's checkpoint), or a hub id (downloads it); without it "
                        "the CLAP score is skipped")
    parser.add_argument("--cache-dir", help="where reference statistics are cached "
                        "(default $SA_TRAIN_CACHE/reference_stats or ~/.cache/sa_train/reference_stats)")
    parser.add_argument("--timing-bins", type=float, nargs="+", metavar="SECONDS",
                        help="edges of the requested-length bins for timing errors (default: 1 s bins for "
                        "short clips, 10 s bins from 20 s up)")
    parser.add_argument("--device", default="auto", help="torch device for the OpenL3, PaSST and CLAP models: auto "
                        "(the GPU when there is one, default), cpu, cuda, cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    parser.add_argument("--out", help="folder for the reports (default GENERATED/evaluation)")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from sa_train.evaluation.embedders import build_embedder, build_tagger, build_text_audio_embedder
    from sa_train.evaluation.evaluate import run_evaluation

    try:
        for flag, value, used in (("--openl3-weights", args.openl3_weights, args.embedder == "openl3"),
                                  ("--passt-weights", args.passt_weights, args.tagger == "passt")):
            if value is not None and not used:
                raise ValueError(f"{flag} is given but its model is not used; add --embedder openl3 / --tagger passt "
                                 "or drop the flag")
        embedder = None if args.embedder == "none" else build_embedder(args.embedder, **(
            {"weights": args.openl3_weights, "device": args.device} if args.embedder == "openl3" else {}))
        tagger = None if args.tagger == "none" else build_tagger(args.tagger, **(
            {"weights": args.passt_weights, "device": args.device} if args.tagger == "passt" else {}))
        clap = build_text_audio_embedder(args.clap, device=args.device) if args.clap else None
        result = run_evaluation(
            args.generated, reference=args.reference, embedder=embedder, tagger=tagger, clap=clap,
            cache_dir=args.cache_dir, out_dir=args.out, timing_bins=args.timing_bins,
            show_progress=not args.no_progress,
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
