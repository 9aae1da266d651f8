"""`sa-train sweep SWEEP [key=value ...]`: a Ray Tune sweep of training runs and its ablation report."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="a Ray Tune sweep of whole training runs, evaluated and summarised as an ablation table",
        description="Runs one training run per point of the sweep's search space (each a child MLflow run of the "
        "sweep's parent run), evaluates each exported model, and writes report/ablation.md, ablation.csv and PNG "
        "charts into the sweep folder (<storage>/<name>). Every trial config is checked before Ray starts. "
        "Overrides of experiment keys (model., data., training., distributed., tracking., storage.) apply to every "
        "trial; other keys override the sweep file (e.g. name=my_sweep num_samples=2 evaluation.enabled=false).",
    )
    parser.add_argument("sweep", metavar="SWEEP", help="sweep YAML, e.g. sweeps/tiny_timing_ablation.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="overrides of the sweep file or of every trial's config, e.g. training.steps=20")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue an interrupted sweep: finished and failed trials are not run again")
    mode.add_argument("--report-only", action="store_true",
                      help="write and log the report of an existing sweep without running anything")
    mode.add_argument("--dry-run", action="store_true",
                      help="check every trial config and list the trials' overrides, without starting Ray")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sa_train.sweep.config import load_sweep

    spec = load_sweep(args.sweep, args.overrides)  # a bad sweep file fails here, before Ray
    if args.dry_run:
        return _dry_run(spec)
    from sa_train.sweep.runner import report_sweep, run_sweep

    outcome = report_sweep(spec) if args.report_only else run_sweep(spec, resume=args.resume)
    print(outcome.summary())
    return 0 if outcome.complete else 1


def _dry_run(spec) -> int:
    import itertools

    from sa_train.sweep.space import check_trial_configs, count_trials, format_value, parse_search_space

    from sa_train.config import ConfigError
    from sa_train.sweep.config import check_evaluation_inputs

    dims = parse_search_space(spec.config.search_space, spec.path)
    check_trial_configs(spec.experiment, spec.overrides, dims, spec.path)
    try:
        check_evaluation_inputs(spec)
    except ConfigError as err:  # the trials' configs are fine; the run itself would stop here
        print(f"warning: {err}")
    print(f"sweep {spec.name}: {count_trials(dims, spec.config.num_samples)} trials over {spec.experiment}")
    print("  every trial: " + (" ".join(spec.overrides) or "(no overrides)"))
    grid = [d for d in dims if d.kind == "grid"]
    sampled = [f"{d.key}~choice({', '.join(format_value(v) for v in d.values)})" if d.kind == "choice"
               else f"{d.key}~{d.kind}({d.low:g}, {d.high:g})" for d in dims if d.kind != "grid"]
    for combo in itertools.product(*(d.values for d in grid)):
        chosen = [o for d, v in zip(grid, combo) for o in d.overrides(v)]
        print("  trial: " + " ".join(chosen + sampled) + (f"  (x {spec.config.num_samples} samples)"
                                                          if spec.config.num_samples > 1 else ""))
    return 0
