"""One trial: the plain function Tune runs, which trains through Ray Train and reports to Tune.

Ray 2.60 (Train V2) drives Train from Tune this way: the function builds and fits a TorchTrainer
(here through :func:`sa_train.training.launcher.launch`) with a TuneReportCallback in the
trainer's RunConfig. The callback forwards what the workers report at each checkpoint (step, loss,
checkpoint_path) to Tune as intermediate results, which is what ASHA compares. When fit() returns,
the function has the exported model evaluated in a Ray task of its own (on a GPU when the trials
train on GPUs: sa_train.sweep.evaluation_task) and reports the final metrics with ``tune.report``, as
the trial's last result; only results with ``sweep_finished = 1`` are complete trials.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from sa_train.config.paths import absolute_local_paths

from sa_train.sweep.config import SweepEvaluationConfig
from sa_train.sweep.space import SearchDimension, trial_overrides, trial_values

logger = logging.getLogger(__name__)

FINISHED_KEY = "sweep_finished"
# Keys of the final result that are not metrics (strings for the report).
INFO_KEYS = ("run_name", "mlflow_run_id", "exported", "run_dir")


@dataclass
class TrialContext:
    """What every trial needs from the sweep's driver (pickled into each trial's actor)."""

    sweep_name: str
    experiment: str  # absolute path of the base experiment YAML
    overrides: list[str]  # the sweep's overrides plus storage.path / tracking.uri of its runs
    dimensions: list[SearchDimension]
    parent_run_id: Optional[str]
    tracking_uri: Optional[str]
    evaluation: SweepEvaluationConfig = field(default_factory=SweepEvaluationConfig)
    workdir: str = "."  # the driver's working folder: relative paths in configs mean the same as in `sa-train train`
    cache_dir: Optional[str] = None  # evaluation reference statistics, shared by the trials


def run_name_for(sweep_name: str, trial_id: str) -> str:
    return f"{sweep_name}-{trial_id}"


def make_trainable(context: TrialContext, launch: Optional[Callable[..., Any]] = None) -> Callable[[dict], None]:
    """The function Tune calls with a trial's sampled config. ``launch`` defaults to
    sa_train.training.launcher.launch (tests pass a wrapper that records each call)."""

    def sa_train_trial(config: dict) -> None:
        run_trial(context, config, launch)

    return sa_train_trial


def run_trial(context: TrialContext, tune_config: dict, launch: Optional[Callable[..., Any]] = None) -> None:
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from sa_train.config import load_config
    from sa_train.sweep.tracking import OVERRIDES_TAG, SWEEP_NAME_TAG, TRIAL_TAG

    if launch is None:
        from sa_train.training.launcher import launch
    # Tune starts each trial in its own folder; configs' relative paths are relative to where the sweep started.
    if os.path.isdir(context.workdir):
        os.chdir(context.workdir)
    trial_id = tune.get_context().get_trial_id()
    run_name = run_name_for(context.sweep_name, trial_id)
    values = trial_values(context.dimensions, tune_config)
    overrides = trial_overrides(context.dimensions, tune_config)
    cfg = load_config(context.experiment, [*context.overrides, *overrides, f"tracking.run_name={run_name}"])
    absolute_local_paths(cfg, Path(context.workdir))
    logger.info("trial %s (%s): %s", trial_id, run_name, " ".join(overrides))
    tags = {SWEEP_NAME_TAG: context.sweep_name, TRIAL_TAG: trial_id, OVERRIDES_TAG: " ".join(overrides)[:5000]}
    try:
        result = launch(cfg, parent_run_id=context.parent_run_id, callbacks=[TuneReportCallback()], extra_tags=tags)
    finally:
        _record_values(context, run_name, values)

    final: dict[str, Any] = {k: result.metrics[k] for k in ("step", "loss") if k in result.metrics}
    if context.evaluation.enabled:
        final.update(_evaluate(context, cfg, result, final.get("step", 0)))
    final.update({FINISHED_KEY: 1, "run_name": run_name, "mlflow_run_id": result.mlflow_run_id or "",
                  "exported": result.exported or "", "run_dir": result.run_dir})
    tune.report(final)


def _record_values(context: TrialContext, run_name: str, values: dict) -> None:
    """The searched values as params of the trial's child run (created by launch, even when it failed)."""
    if not (context.tracking_uri and context.parent_run_id):
        return
    from mlflow.exceptions import MlflowException

    from sa_train.sweep.tracking import find_child_run, log_trial_values

    try:
        run_id = find_child_run(context.tracking_uri, context.parent_run_id, run_name)
        if run_id:
            log_trial_values(context.tracking_uri, run_id, _leaf_values(context.dimensions, values))
    except MlflowException as err:  # bookkeeping only: the trial's outcome stands
        logger.warning("could not record trial values on MLflow run %s: %s", run_name, err)


def _leaf_values(dims: Sequence[SearchDimension], values: dict) -> dict[str, Any]:
    return {key: v for d in dims for key, v in d.leaves(values[d.key])}


def _evaluate(context: TrialContext, cfg, result, step: int) -> dict[str, float]:
    """Generation and scoring in a Ray task of their own (sa_train.sweep.evaluation_task), on a GPU
    when the trials train on GPUs, once training has released its workers; this driver waits."""
    import ray

    from sa_train.sweep.evaluation_task import EvaluationTask, run_evaluation_task
    from sa_train.sweep.resources import uses_gpu

    if not result.exported:
        raise RuntimeError(f"run {result.run_name} exported no model, so it cannot be evaluated")
    task = EvaluationTask(
        run_name=result.run_name, exported=result.exported, run_dir=result.run_dir, evaluation=context.evaluation,
        step=int(step or 0), workdir=context.workdir, cache_dir=context.cache_dir,
        tracking_uri=context.tracking_uri, mlflow_run_id=result.mlflow_run_id,
    )
    metrics = run_evaluation_task(task, gpu=uses_gpu(cfg.distributed.device, ray.cluster_resources()))
    logger.info("trial %s evaluation: %s", result.run_name,
                ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    return metrics
