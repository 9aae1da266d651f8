"""The sweep's driver: validate, size, track, run (or resume) the Tuner, then report.

    <storage>/<sweep name>/              Tune's experiment folder (Tuner.restore reads it)
        sweep.yaml                       the resolved sweep, to check that a resume matches it
        trial_<id>/                      Tune's per-trial files (results, errors)
        runs/<sweep>-<trial id>/         each trial's Ray Train run: checkpoints, exported model, evaluation
        report/                          ablation.md, ablation.csv, <metric>.png
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import yaml

from sa_train.config.fields import ConfigError
from sa_train.sweep.config import SweepSpec, check_evaluation_inputs, sweep_to_yaml
from sa_train.sweep.report import FAILED, FINISHED, STOPPED, TrialRow, best_trial, collect_rows, table_columns, write_report
from sa_train.sweep.space import (
    SearchDimension, check_trial_configs, count_trials, parse_search_space, tune_param_space,
)

logger = logging.getLogger(__name__)

SWEEP_FILE = "sweep.yaml"
RUNS_DIR = "runs"
REPORT_DIR = "report"
CACHE_DIR = "evaluation_cache"


@dataclass
class SweepOutcome:
    """Where a sweep is and how its trials ended."""

    name: str
    sweep_dir: str
    rows: list[TrialRow]
    report_files: dict[str, str] = field(default_factory=dict)
    parent_run_id: Optional[str] = None
    tracking_uri: Optional[str] = None
    expected_trials: int = 0  # Tune creates trials lazily: an interrupted sweep may not list them all yet

    @property
    def complete(self) -> bool:
        done = all(r.status in (FINISHED, FAILED, STOPPED) for r in self.rows)
        return done and len(self.rows) >= self.expected_trials

    def summary(self) -> str:
        counts = {s: sum(r.status == s for r in self.rows) for s in dict.fromkeys(r.status for r in self.rows)}
        lines = [f"sweep {self.name}: {len(self.rows)} of {max(self.expected_trials, len(self.rows))} trials ("
                 + ", ".join(f"{n} {s}" for s, n in counts.items()) + f") in {self.sweep_dir}"]
        if self.report_files:
            lines.append("  report: " + ", ".join(self.report_files.values()))
        if self.parent_run_id:
            lines.append(f"  MLflow parent run {self.parent_run_id} at {self.tracking_uri}")
        if not self.complete:
            lines.append("  unfinished trials remain: continue with `sa-train sweep SWEEP --resume`")
        return "\n".join(lines)


@dataclass
class _Prepared:
    dims: list[SearchDimension]
    configs: list  # ExperimentConfigs: the base one first, then one per searched value (and combination)
    sweep_dir: str
    storage_root: str


def _prepare(spec: SweepSpec) -> _Prepared:
    """Everything checked before Ray starts: the search space against the config schema."""
    from sa_train.training.launcher import storage_root

    dims = parse_search_space(spec.config.search_space, spec.path)
    configs = check_trial_configs(spec.experiment, spec.overrides, dims, spec.path)
    if spec.config.scheduler.kind != "none":
        scheduler_steps(spec, configs[0])
    root = spec.config.storage or storage_root(configs[0])
    return _Prepared(dims, configs, f"{root.rstrip('/')}/{spec.name}", root)


# Sweep folders may be local or s3:// / gs:// (Tune writes there too); small files go through pyarrow.
def _fs(path: str):
    import pyarrow.fs

    if "://" in path:
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), path


def _read_text(path: str) -> Optional[str]:
    import pyarrow.fs

    fs, inner = _fs(path)
    if fs.get_file_info(inner).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(inner) as handle:
        return handle.readall().decode()


def _write_text(path: str, text: str) -> None:
    fs, inner = _fs(path)
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(inner) as handle:
        handle.write(text.encode())


def _stored_sweep(spec: SweepSpec) -> str:
    config = yaml.safe_load(sweep_to_yaml(spec.config))
    config.update(experiment=spec.experiment, overrides=list(spec.overrides))
    return yaml.safe_dump(config, sort_keys=False)


def _check_matches_stored(spec: SweepSpec, sweep_dir: str) -> None:
    stored_text = _read_text(f"{sweep_dir}/{SWEEP_FILE}")
    if stored_text is None:
        return
    stored, current = yaml.safe_load(stored_text), yaml.safe_load(_stored_sweep(spec))
    for key in ("experiment", "overrides", "search_space", "num_samples"):
        if stored.get(key) != current.get(key):
            raise ConfigError(
                f"sweep {spec.name}: '{key}' differs from the sweep stored in {sweep_dir}/{SWEEP_FILE} "
                f"({stored.get(key)!r} there, {current.get(key)!r} now); a resumed sweep must be the same sweep. "
                f"Start a new one with name=<new name>")


def _experiment_exists(sweep_dir: str) -> bool:
    from ray.tune import Tuner

    return Tuner.can_restore(sweep_dir)


def scheduler_steps(spec: SweepSpec, base_cfg) -> tuple[int, int]:
    """(max_t, grace_period) of ASHA in training steps; raises ConfigError when no trial could be compared."""
    sched = spec.config.scheduler
    max_t = sched.max_t or base_cfg.training.steps
    if sched.grace_period >= max_t:
        raise ConfigError(
            f"{spec.path}: scheduler.grace_period={sched.grace_period} must be below scheduler.max_t={max_t} "
            f"(default training.steps), or ASHA never compares trials")
    if base_cfg.training.checkpoint_every > sched.grace_period:
        logger.warning("training.checkpoint_every=%d exceeds scheduler.grace_period=%d: trials report their loss "
                       "only at checkpoints, so ASHA compares them later than the grace period",
                       base_cfg.training.checkpoint_every, sched.grace_period)
    return max_t, sched.grace_period


def _scheduler(spec: SweepSpec, base_cfg):
    sched = spec.config.scheduler
    if sched.kind == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    max_t, grace = scheduler_steps(spec, base_cfg)
    # ASHA stops a trial whose step reaches max_t: +1 lets a trial that trains exactly max_t steps report
    # its last checkpoint and then run its evaluation.
    return ASHAScheduler(time_attr="step", metric=sched.metric, mode=sched.mode, max_t=max_t + 1,
                         grace_period=grace, reduction_factor=sched.reduction_factor)


def trial_dirname(trial) -> str:
    """Short trial folders: the default one spells out every searched value."""
    return f"trial_{trial.trial_id}"


def _tracking(spec: SweepSpec, prep: _Prepared, concurrency: int, needs_text: str,
              resume: bool) -> tuple[Optional[str], Optional[str]]:
    base = prep.configs[0]
    if not base.tracking.enabled:
        return None, None
    from sa_train.sweep.tracking import start_parent_run
    from sa_train.tracking.mlflow_tracker import resolve_tracking_uri

    uri = resolve_tracking_uri(base.tracking)  # absolute: trials run in other folders
    params = {
        "sweep_file": spec.path, "experiment": spec.experiment, "num_samples": spec.config.num_samples,
        "metric": spec.config.metric, "mode": spec.config.mode, "scheduler": spec.config.scheduler.kind,
        "search_space": json.dumps(spec.config.search_space, sort_keys=True, default=str),
        "overrides": json.dumps(list(spec.overrides)), "trials": count_trials(prep.dims, spec.config.num_samples),
        "max_concurrent_trials": concurrency, "trial_resources": needs_text,
    }
    return uri, start_parent_run(uri, base.tracking.experiment, spec.name, params, resume)


def run_sweep(spec: SweepSpec, *, resume: bool = False, launch: Optional[Callable[..., Any]] = None,
              callbacks: Optional[Sequence] = None) -> SweepOutcome:
    """Run the sweep (or continue it with ``resume``), then write and log its report.

    ``launch`` replaces sa_train.training.launcher.launch in the trials (tests wrap it); ``callbacks``
    are Ray Tune callbacks added to the Tuner's RunConfig.
    """
    prep = _prepare(spec)  # a bad key or value fails here, before Ray starts
    check_evaluation_inputs(spec, prep.configs)  # and that timing can be measured in every trial's window
    exists = _experiment_exists(prep.sweep_dir)
    if resume and not exists:
        raise ConfigError(f"sweep {spec.name}: nothing to resume at {prep.sweep_dir}; run it without --resume")
    if not resume and exists:
        raise ConfigError(
            f"sweep {spec.name} already exists at {prep.sweep_dir}: continue it with --resume, report it with "
            f"--report-only, or start a new one with name=<new name>")
    if resume:
        _check_matches_stored(spec, prep.sweep_dir)

    import ray
    from ray import tune

    from sa_train.ray_session import ensure_ray
    from sa_train.sweep.resources import max_concurrent_trials, trial_resources
    from sa_train.sweep.trial import TrialContext, make_trainable

    cpu_needs = trial_resources(prep.configs, spec.config.resources_per_trial, {})
    ensure_ray(min_cpus=cpu_needs.cpus)
    cluster = ray.cluster_resources()
    needs = trial_resources(prep.configs, spec.config.resources_per_trial, cluster)
    concurrency = max_concurrent_trials(needs, cluster, spec.config.max_concurrent_trials)
    logger.info("sweep %s: %d trials, %s; %d at a time on a cluster of %g CPU / %g GPU", spec.name,
                count_trials(prep.dims, spec.config.num_samples), needs.describe(), concurrency,
                cluster.get("CPU", 0), cluster.get("GPU", 0))

    uri, parent = _tracking(spec, prep, concurrency, needs.describe(), resume)
    run_overrides = [*spec.overrides, f"storage.path={prep.sweep_dir}/{RUNS_DIR}"]
    if uri:
        run_overrides.append(f"tracking.uri={uri}")
    local = "://" not in prep.sweep_dir
    context = TrialContext(
        sweep_name=spec.name, experiment=spec.experiment, overrides=run_overrides, dimensions=prep.dims,
        parent_run_id=parent, tracking_uri=uri, evaluation=spec.config.evaluation, workdir=os.getcwd(),
        cache_dir=f"{prep.sweep_dir}/{CACHE_DIR}" if local else None,
    )
    request = {k: v for k, v in needs.driver_request().items() if v > 0} or {"CPU": 0}
    trainable = tune.with_resources(make_trainable(context, launch), tune.PlacementGroupFactory([request]))
    param_space = tune_param_space(prep.dims)
    if resume:
        tuner = tune.Tuner.restore(prep.sweep_dir, trainable, resume_unfinished=True, resume_errored=False,
                                   restart_errored=False, param_space=param_space)
    else:
        _write_text(f"{prep.sweep_dir}/{SWEEP_FILE}", _stored_sweep(spec))
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(num_samples=spec.config.num_samples, max_concurrent_trials=concurrency,
                                        scheduler=_scheduler(spec, prep.configs[0]), trial_dirname_creator=trial_dirname),
            run_config=tune.RunConfig(
                name=spec.name, storage_path=prep.storage_root, callbacks=list(callbacks or []) or None,
                # A failed trial is recorded (after its retries) and the others go on.
                failure_config=tune.FailureConfig(max_failures=spec.config.trial_max_failures, fail_fast=False),
            ),
        )
    tuner.fit()  # failed trials are recorded in the results, not raised
    return _report(spec, prep, uri, parent)


def report_sweep(spec: SweepSpec) -> SweepOutcome:
    """The report of an existing sweep (finished or not), written and logged again; runs nothing."""
    prep = _prepare(spec)
    if not _experiment_exists(prep.sweep_dir):
        raise ConfigError(f"sweep {spec.name}: no sweep at {prep.sweep_dir} to report; run it first")
    _check_matches_stored(spec, prep.sweep_dir)
    uri = parent = None
    base = prep.configs[0]
    if base.tracking.enabled:
        from sa_train.sweep.tracking import find_parent_run
        from sa_train.tracking.mlflow_tracker import resolve_tracking_uri

        uri = resolve_tracking_uri(base.tracking)
        parent = find_parent_run(uri, base.tracking.experiment, spec.name)
    return _report(spec, prep, uri, parent)


def _report(spec: SweepSpec, prep: _Prepared, uri: Optional[str], parent: Optional[str]) -> SweepOutcome:
    rows = collect_rows(prep.sweep_dir, prep.dims)
    local = "://" not in prep.sweep_dir
    out_dir = Path(prep.sweep_dir) / REPORT_DIR if local else Path(tempfile.mkdtemp(prefix="sa_train_report_"))
    title = f"Sweep {spec.name}"
    files = write_report(rows, out_dir, title=title, metric=spec.config.metric, mode=spec.config.mode)
    if not local:
        import pyarrow.fs

        pyarrow.fs.copy_files(str(out_dir), f"{prep.sweep_dir}/{REPORT_DIR}")
    outcome = SweepOutcome(spec.name, prep.sweep_dir, rows, {k: str(v) for k, v in files.items()}, parent, uri,
                           expected_trials=count_trials(prep.dims, spec.config.num_samples))
    if parent and uri:
        from sa_train.sweep.tracking import close_unfinished_children, finish_parent_run

        close_unfinished_children(uri, parent)
        best = best_trial(rows, spec.config.metric, spec.config.mode)
        metrics = {"trials_finished": sum(r.status == FINISHED for r in rows),
                   "trials_failed": sum(r.status == FAILED for r in rows), "trials": len(rows)}
        tags = {"sa_train.sweep_complete": str(outcome.complete).lower()}
        if best is not None:
            metrics[f"best_{spec.config.metric}"] = best.metrics[spec.config.metric]
            tags["sa_train.best_trial"] = best.trial_id
        finish_parent_run(uri, parent, status="FINISHED" if outcome.complete else "KILLED", metrics=metrics,
                          tags=tags, report_dir=out_dir, table=table_columns(rows) if rows else None)
    return outcome
