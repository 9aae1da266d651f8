"""Rank 0's tracker in a worker: a tracking or sampling failure is logged and counted, never raised.

A raised error would kill the worker group, and Ray Train would spend one of its restarts (the
run's failure budget) on an MLflow outage. After a failure the tracker pauses for a minute, so an
outage costs the ranks (waiting for rank 0 at the next collective) one MLflow timeout a minute,
not one per call. The calls that failed or were skipped are counted in the metrics as
``system/tracking_failures``, failed audio samples as ``system/sampling_failures``, once MLflow
answers again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Mapping, Optional

from sa_train.tracking.mlflow_tracker import RunTracker

logger = logging.getLogger(__name__)


class FailSafeTracker:
    """The :class:`RunTracker` calls rank 0 makes, each of which may fail without consequence.

    The run is opened on first use and again after a failed opening, so a store that is down when
    the workers start is used once it is back.
    """

    def __init__(self, tracking_uri: str, run_id: str, pause_after_failure_s: float = 60.0):
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self.pause_after_failure_s = pause_after_failure_s
        self.tracking_failures = 0
        self.sampling_failures = 0
        self._tracker: Optional[RunTracker] = None
        self._paused_until = 0.0

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        counts = {"system/tracking_failures": float(self.tracking_failures),
                  "system/sampling_failures": float(self.sampling_failures)}
        self._call(f"logging metrics of step {step}", lambda tracker: tracker.log_metrics({**metrics, **counts}, step))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._call("setting tags", lambda tracker: tracker.set_tags(tags))

    def log_artifact(self, path: Path, artifact_path: Optional[str] = None) -> None:
        self._call(f"logging {Path(path).name}", lambda tracker: tracker.log_artifact(path, artifact_path))

    def log_loss_curves(self, title: str = "") -> None:
        self._call("logging the loss curves", lambda tracker: tracker.log_loss_curves(title))

    def count_sampling_failure(self) -> None:
        """Audio samples failed (the caller logged why); the count goes into the metrics."""
        self.sampling_failures += 1

    def _call(self, what: str, action: Callable[[RunTracker], None]) -> None:
        if time.monotonic() < self._paused_until:
            self.tracking_failures += 1
            logger.warning("MLflow: %s skipped, paused after a failure (%d tracking failures)", what,
                           self.tracking_failures)
            return
        try:
            if self._tracker is None:
                self._tracker = RunTracker(self.tracking_uri, self.run_id)
            action(self._tracker)
        except Exception as err:  # noqa: BLE001 - whatever MLflow or the network raises, training goes on
            self.tracking_failures += 1
            self._paused_until = time.monotonic() + self.pause_after_failure_s
            # The first failure with its traceback; during an outage, one line per failure.
            logger.warning("MLflow: %s failed (%d tracking failures in this worker group); training goes on: %s",
                           what, self.tracking_failures, err, exc_info=self.tracking_failures == 1)
