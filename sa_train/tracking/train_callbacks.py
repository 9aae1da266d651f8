"""Ray Train callbacks that keep the MLflow run up to date from the driver's side.

They run in Ray Train's controller, on the driver's node, and never raise: a tracking outage is
logged and counted, and the training run goes on.
"""

from __future__ import annotations

import logging
from pathlib import PurePosixPath
from typing import Any, Optional

import ray.train

from sa_train.tracking.mlflow_tracker import CHECKPOINT_TAG

logger = logging.getLogger(__name__)


def checkpoint_location(run_dir: str, checkpoint_path: str) -> str:
    """Where a checkpoint of the run lies, as the user named the storage (s3://..., or a local path).

    Ray's ``Checkpoint.path`` drops the URI scheme; its folder name is under the run folder.
    """
    return f"{run_dir.rstrip('/')}/{PurePosixPath(checkpoint_path).name}"


class CheckpointLocationTag(ray.train.UserCallback):
    """Sets the MLflow run's checkpoint_location tag at every reported checkpoint, so a run that
    fails or is killed later still names the checkpoint to resume or export from."""

    def __init__(self, tracking_uri: str, run_id: str, run_dir: str):
        self.tracking_uri, self.run_id, self.run_dir = tracking_uri, run_id, run_dir
        self.failures = 0

    def after_report(self, run_context: Any, metrics: list, checkpoint: Optional[ray.train.Checkpoint]) -> None:
        if checkpoint is None:
            return
        location = checkpoint_location(self.run_dir, checkpoint.path)
        try:
            from mlflow.tracking import MlflowClient

            MlflowClient(self.tracking_uri).set_tag(self.run_id, CHECKPOINT_TAG, location)
        except Exception:  # noqa: BLE001 - a tracking outage must not stop training
            self.failures += 1
            logger.exception("could not tag MLflow run %s with checkpoint %s (%d tracking failures); training goes on",
                             self.run_id, location, self.failures)
