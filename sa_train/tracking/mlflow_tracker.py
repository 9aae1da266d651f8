"""MLflow tracking of a training run, through the client API (no global state).

The driver creates the MLflow run before any worker starts and hands its id to the workers; rank 0
logs. A resubmitted run continues the MLflow run whose id its last checkpoint holds (never one
matched by name: a new run that reuses a name gets a new MLflow run). A restarted worker group
re-trains the steps since its last checkpoint: their metrics are not logged twice, because the
tracker skips steps at or below the last step already in the store.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sa_train.tracking.code_version import git_commit
from sa_train.tracking.config import TrackingConfig

logger = logging.getLogger(__name__)

RUN_NAME_TAG = "sa_train.run_name"
PARENT_TAG = "mlflow.parentRunId"
RESUMED_FROM_TAG = "sa_train.resumed_from_run_id"  # a checkpoint's MLflow run missing from this store
CHECKPOINT_TAG = "checkpoint_location"  # the run's newest checkpoint, updated at every checkpoint
STEP_METRIC = "train/step"
_MAX_PARAM_LENGTH = 6000
_BATCH = 900  # MLflow accepts at most 1000 entities per log_batch


def default_tracking_uri(workdir: Optional[Path] = None) -> str:
    """SQLite store at an absolute path: Ray Train changes each worker's working directory."""
    return f"sqlite:///{(workdir or Path.cwd()).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(cfg: TrackingConfig) -> str:
    return cfg.uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def _artifact_root(uri: str) -> Optional[str]:
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return None  # a tracking server decides


def environment_tags() -> dict[str, str]:
    """Tags that say what produced a run: code version and package versions."""
    from importlib.metadata import PackageNotFoundError, version

    tags = {"git_commit": git_commit(), "python": platform.python_version(), "host": platform.node()}
    for package in ("sa_train", "torch", "ray", "deepspeed", "mlflow", "transformers"):
        try:
            tags[f"version.{package}"] = version(package)
        except PackageNotFoundError:
            tags[f"version.{package}"] = "not installed"
    return tags


def get_or_create_experiment(client: MlflowClient, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=_artifact_root(uri))


def start_run(
    cfg: TrackingConfig,
    run_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    parent_run_id: Optional[str] = None,
    resume_run_id: Optional[str] = None,
) -> str:
    """Continue the MLflow run ``resume_run_id`` (the id a resumed checkpoint holds), or create a
    new run named run_name."""
    uri = resolve_tracking_uri(cfg)
    client = MlflowClient(uri)
    if resume_run_id:
        try:
            client.update_run(resume_run_id, status="RUNNING")
            logger.info("continuing MLflow run %s (%s), the run of the resumed checkpoint", run_name, resume_run_id)
            return resume_run_id
        except MlflowException as err:
            logger.warning("the resumed checkpoint's MLflow run %s is not in %s (%s); the run goes on in a new "
                           "MLflow run", resume_run_id, uri, err.error_code)
            tags = {**tags, RESUMED_FROM_TAG: resume_run_id}
    experiment_id = get_or_create_experiment(client, cfg.experiment, uri)
    all_tags = {RUN_NAME_TAG: run_name, **environment_tags(), **cfg.tags, **tags}
    if parent_run_id:
        all_tags[PARENT_TAG] = parent_run_id
    run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
    run_id = run.info.run_id
    param_list = [Param(k, str(v)[:_MAX_PARAM_LENGTH]) for k, v in params.items()]
    for i in range(0, len(param_list), _BATCH):
        client.log_batch(run_id, params=param_list[i : i + _BATCH])
    logger.info("MLflow run %s (%s) in experiment %s at %s", run_name, run_id, cfg.experiment, uri)
    return run_id


@contextmanager
def closed_on_error(tracking_uri: str, run_id: str) -> Iterator[None]:
    """Mark the MLflow run FAILED when the body raises, KILLED when the driver is interrupted or
    terminated (Ctrl-C; SIGTERM from `ray job stop`, which Ray's driver turns into SystemExit),
    so that no run stays RUNNING after its driver stopped. Only a SIGKILL escapes this."""
    try:
        yield
    except BaseException as err:
        status = "FAILED" if isinstance(err, Exception) else "KILLED"
        try:
            MlflowClient(tracking_uri).set_terminated(run_id, status=status)
        except Exception:  # noqa: BLE001 - the original error is the one to report
            logger.exception("could not mark MLflow run %s %s", run_id, status)
        raise


class RunTracker:
    """What rank 0 logs into an existing MLflow run."""

    def __init__(self, tracking_uri: str, run_id: str):
        self.client = MlflowClient(tracking_uri)
        self.run_id = run_id
        history = self.client.get_metric_history(run_id, STEP_METRIC)
        self.last_logged_step = max((m.step for m in history), default=0)
        if self.last_logged_step:
            logger.info("MLflow already holds steps up to %d; re-trained steps are not logged again", self.last_logged_step)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if step <= self.last_logged_step:
            return
        now = int(time.time() * 1000)
        entries = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        entries.append(Metric(STEP_METRIC, float(step), now, step))
        self.client.log_batch(self.run_id, metrics=entries)
        self.last_logged_step = step

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: Path, artifact_path: Optional[str] = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_loss_curves(self, title: str = "") -> None:
        """A PNG of every train/* loss metric over steps, under plots/ (people read curves, not tables)."""
        import tempfile

        from sa_train.tracking.media import write_loss_curves_png

        run = self.client.get_run(self.run_id)
        keys = [k for k in run.data.metrics if k.startswith("train/") and ("loss" in k or k.split("/")[-1] in
                ("stft", "kl", "adversarial", "feature_matching", "waveform_l1", "disc_hinge"))]
        curves = {k: [(m.step, m.value) for m in self.client.get_metric_history(self.run_id, k)] for k in sorted(keys)}
        if not curves:
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = write_loss_curves_png(curves, Path(tmp) / "loss_curves.png", title)
            self.log_artifact(path, "plots")

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
