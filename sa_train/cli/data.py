"""`sa-train data check` and `sa-train data synth`."""

from __future__ import annotations

import argparse
import logging
import os
import sys

logger = logging.getLogger(__name__)

EXIT_TOO_MANY_BAD = 1
EXIT_USAGE = 2


def _fraction(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not a fraction between 0 and 1")
    return number


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="validate datasets and write the synthetic dataset")
    commands = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    check = commands.add_parser(
        "check",
        help="scan audio files in parallel, report bad ones and write a clean manifest",
        description="Open and decode every file of the given folders/manifests/URIs on the Ray cluster "
        "(a local Ray instance unless RAY_ADDRESS is set), print a summary and the bad files by reason, "
        "and write a JSONL manifest of the good files that training reads directly.",
    )
    check.add_argument("sources", nargs="+", metavar="PATH_OR_MANIFEST",
                       help="audio folder, .jsonl/.csv manifest, single audio file, or s3:// / gs:// URI")
    check.add_argument("--out", metavar="MANIFEST", help="write the good files to this JSONL manifest")
    check.add_argument("--max-bad-fraction", type=_fraction, default=0.01,
                       help="exit with code 1 when more than this fraction of files is bad (default 0.01)")
    check.add_argument("--min-seconds", type=float, default=0.5,
                       help="files shorter than this many seconds count as bad (default 0.5, as data.min_seconds)")
    check.add_argument("--quick", action="store_true",
                       help="read headers and both ends of each file instead of decoding every sample "
                       "(faster; misses NaN or silence in the middle of a file)")
    check.add_argument("--parallel", type=int, default=None, metavar="N",
                       help="at most N scan tasks at a time (default: as many as the Ray cluster runs)")
    check.add_argument("--no-ray", action="store_true", help="scan in this process instead of Ray tasks")
    check.add_argument("--max-paths", type=int, default=20, help="bad paths printed per reason (default 20)")
    check.set_defaults(func=run_check)

    synth = commands.add_parser(
        "synth",
        help="write the deterministic synthetic captioned dataset",
        description="Write tones, chords, noise bursts and drum patterns as real audio files with captions "
        "that state their pitch, tempo and duration, JSON sidecars, and OUT/manifest.jsonl.",
    )
    synth.add_argument("out", metavar="OUT", help="folder to write into (created if missing)")
    synth.add_argument("--num", type=int, default=64, help="number of files (default 64)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes identical files")
    synth.add_argument("--format", choices=["flac", "wav"], default="flac", help="file format (default flac)")
    synth.add_argument("--sample-rate", type=int, default=44100, help="sample rate in Hz (default 44100)")
    synth.add_argument("--min-seconds", type=float, default=1.0, help="shortest duration in seconds (default 1.0)")
    synth.add_argument("--max-seconds", type=float, default=None,
                       help="longest duration in seconds (default 2.97 = the tiny config's 131072-sample window)")
    synth.set_defaults(func=run_synth)


def run_check(args: argparse.Namespace) -> int:
    from sa_train.data.check import check_records, format_report, write_manifest
    from sa_train.data.sources import collect_records

    try:
        records = collect_records(args.sources)
    except ValueError as err:  # a missing folder, a malformed manifest: the message says which
        print(f"sa-train data check: {err}", file=sys.stderr)
        return EXIT_USAGE
    if not records:
        print(f"sa-train data check: no audio files in {' '.join(args.sources)}", file=sys.stderr)
        return EXIT_TOO_MANY_BAD
    report = check_records(
        records, min_seconds=args.min_seconds, full=not args.quick, use_ray=not args.no_ray,
        max_in_flight=args.parallel, progress=sys.stderr.isatty(),
    )
    print(format_report(report, max_paths=args.max_paths))
    if args.out:
        write_manifest(report, args.out)
        print(f"manifest of {len(report.files)} good files: {args.out}")
    if report.bad_fraction > args.max_bad_fraction:
        print(
            f"sa-train data check: {report.bad_fraction:.2%} of files are bad, above --max-bad-fraction "
            f"{args.max_bad_fraction:g}",
            file=sys.stderr,
        )
        return EXIT_TOO_MANY_BAD
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from sa_train.data.synth import DEFAULT_MAX_SECONDS, MANIFEST_NAME, write_synth_dataset

    try:
        rows = write_synth_dataset(
            args.out, args.num, args.seed, fmt=args.format, sample_rate=args.sample_rate,
            min_seconds=args.min_seconds, max_seconds=args.max_seconds or DEFAULT_MAX_SECONDS,
        )
    except ValueError as err:
        print(f"sa-train data synth: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {len(rows)} files and {os.path.join(args.out, MANIFEST_NAME)}")
    return 0
