"""MLflow for a sweep: one parent run, found again by its tag on resume; one child run per trial.

Children are created by :func:`sa_train.training.launcher.launch` with ``parent_run_id`` (the tag
mlflow.parentRunId); this module adds the trial's searched values as params, the evaluation metrics,
and at the end the report on the parent.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sa_train.tracking.mlflow_tracker import PARENT_TAG, RUN_NAME_TAG, environment_tags, get_or_create_experiment

logger = logging.getLogger(__name__)

SWEEP_TAG = "sa_train.sweep"  # on the parent: the sweep's name
TRIAL_TAG = "sa_train.sweep_trial"  # on each child: the Tune trial id
SWEEP_NAME_TAG = "sa_train.sweep_name"  # on each child: its sweep's name
OVERRIDES_TAG = "sa_train.trial_overrides"  # on each child: the trial's key=value overrides
PARAM_PREFIX = "sweep."
_MAX_PARAM_LENGTH = 6000


def find_parent_run(uri: str, experiment: str, sweep_name: str) -> Optional[str]:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    # The newest one: a sweep folder that was deleted and run again gets a new parent.
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.`{SWEEP_TAG}` = '{sweep_name}'",
                              max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id if runs else None


def start_parent_run(uri: str, experiment: str, sweep_name: str, params: Mapping[str, Any], resume: bool) -> str:
    """The sweep's parent run: when resuming, the newest one with this sweep's tag (marked running
    again); otherwise a new one."""
    client = MlflowClient(uri)
    run_id = find_parent_run(uri, experiment, sweep_name) if resume else None
    if run_id:
        logger.info("continuing the sweep's MLflow parent run %s", run_id)
        client.update_run(run_id, status="RUNNING")
        return run_id
    experiment_id = get_or_create_experiment(client, experiment, uri)
    run = client.create_run(experiment_id, run_name=sweep_name, tags={SWEEP_TAG: sweep_name, **environment_tags()})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:_MAX_PARAM_LENGTH]) for k, v in params.items()])
    logger.info("MLflow parent run %s for sweep %s in experiment %s", run.info.run_id, sweep_name, experiment)
    return run.info.run_id


def child_runs(uri: str, parent_run_id: str) -> list:
    client = MlflowClient(uri)
    parent = client.get_run(parent_run_id)
    return client.search_runs([parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                              order_by=["attributes.start_time DESC"])


def find_child_run(uri: str, parent_run_id: str, run_name: str) -> Optional[str]:
    """The newest child run named run_name (a trial retried before its first checkpoint has several)."""
    for run in child_runs(uri, parent_run_id):
        if run.data.tags.get(RUN_NAME_TAG) == run_name:
            return run.info.run_id
    return None


def log_trial_values(uri: str, run_id: str, values: Mapping[str, Any]) -> None:
    """The trial's searched values as params ``sweep.<key>``, so runs can be compared by them."""
    client = MlflowClient(uri)
    logged = client.get_run(run_id).data.params
    params = [Param(PARAM_PREFIX + k, _param_text(v)) for k, v in values.items() if PARAM_PREFIX + k not in logged]
    if params:
        client.log_batch(run_id, params=params)


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text[:_MAX_PARAM_LENGTH]


def log_evaluation(uri: str, run_id: str, metrics: Mapping[str, float], step: int, folder: Optional[Path]) -> None:
    """Evaluation metrics as ``eval/<name>`` at the final step, and the evaluation's report files."""
    client = MlflowClient(uri)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(f"eval/{k}", float(v), now, step) for k, v in metrics.items()])
    if folder is not None and folder.is_dir():
        client.log_artifacts(run_id, str(folder), "evaluation")


def close_unfinished_children(uri: str, parent_run_id: str) -> int:
    """Children still marked RUNNING once the sweep stopped (trials stopped early or interrupted) become
    KILLED; a resumed trial marks its run RUNNING again. Returns how many were closed."""
    client = MlflowClient(uri)
    closed = 0
    for run in child_runs(uri, parent_run_id):
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status="KILLED")
            closed += 1
    return closed


def finish_parent_run(uri: str, run_id: str, *, status: str, metrics: Mapping[str, float],
                      tags: Mapping[str, str], report_dir: Optional[Path], table: Optional[dict]) -> None:
    """The sweep's summary on the parent: counts and the best value as metrics, the report files
    under report/, the table as an MLflow table (sweep_summary.json)."""
    client = MlflowClient(uri)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                     tags=[RunTag(k, str(v)) for k, v in tags.items()])
    if report_dir is not None and report_dir.is_dir():
        client.log_artifacts(run_id, str(report_dir), "report")
    if table:
        try:
            client.log_table(run_id, data=table, artifact_file="sweep_summary.json")
        except (MlflowException, ImportError, ValueError, TypeError) as err:  # the files above hold the same table
            logger.warning("could not log the summary as an MLflow table (%s); it is in report/ instead", err)
    client.set_terminated(run_id, status=status)
