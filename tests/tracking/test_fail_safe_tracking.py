"""Rank 0's tracking never raises: an MLflow outage or a failed audio sample is logged, counted in
the metrics, and training goes on (a raise would kill the worker group and use up its restarts)."""

from __future__ import annotations

import logging

import pytest
from mlflow.tracking import MlflowClient

from sa_train.tracking.fail_safe import FailSafeTracker


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    return uri, client, client.create_run(client.create_experiment("e")).info.run_id


def test_an_unreachable_run_is_logged_and_counted_not_raised(tmp_path, caplog):
    tracker = FailSafeTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "no-such-run")
    with caplog.at_level(logging.WARNING, logger="sa_train.tracking.fail_safe"):
        tracker.log_metrics({"train/loss": 1.0}, step=1)
        tracker.log_artifact(tmp_path / "config.yaml")
        tracker.set_tags({"a": "b"})
        tracker.log_loss_curves("diffusion")
    assert tracker.tracking_failures == 4
    assert "logging metrics of step 1 failed" in caplog.text and "training goes on" in caplog.text


def test_failures_during_an_outage_are_counted_in_the_metrics_once_mlflow_answers(store, monkeypatch):
    uri, client, run_id = store
    tracker = FailSafeTracker(uri, run_id, pause_after_failure_s=0)
    tracker.log_metrics({"train/loss": 1.0}, step=1)

    def outage(*args, **kwargs):
        raise ConnectionError("MLflow server unreachable")

    with monkeypatch.context() as patch:
        patch.setattr(tracker._tracker.client, "log_batch", outage)
        tracker.log_metrics({"train/loss": 0.9}, step=2)
    tracker.count_sampling_failure()
    tracker.log_metrics({"train/loss": 0.8}, step=3)
    metrics = client.get_run(run_id).data.metrics
    assert metrics["system/tracking_failures"] == 1 and metrics["system/sampling_failures"] == 1
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [1, 3]


def test_after_a_failure_the_tracker_pauses_instead_of_waiting_on_mlflow_at_every_step(store, monkeypatch):
    uri, client, run_id = store
    tracker = FailSafeTracker(uri, run_id, pause_after_failure_s=3600)
    tracker.log_metrics({"train/loss": 1.0}, step=1)
    calls = []

    def outage(*args, **kwargs):
        calls.append(1)
        raise ConnectionError("MLflow server unreachable")

    monkeypatch.setattr(tracker._tracker.client, "log_batch", outage)
    for step in range(2, 6):
        tracker.log_metrics({"train/loss": 0.5}, step=step)
    assert len(calls) == 1 and tracker.tracking_failures == 4  # one attempt, three skipped calls


def test_a_failed_audio_sample_is_counted_and_training_goes_on(store):
    from sa_train.training.worker import log_samples

    class BrokenSampler:
        def sample_audio(self, weights):
            raise RuntimeError("sampler out of memory")

    uri, client, run_id = store
    tracker = FailSafeTracker(uri, run_id)
    log_samples(BrokenSampler(), weights=None, tracker=tracker, step=4)  # returns, does not raise
    assert tracker.sampling_failures == 1
