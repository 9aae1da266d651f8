"""A worker process killed with SIGKILL mid-run: Ray restarts the group from the last checkpoint."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from sa_train.training.checkpoint import find_latest_checkpoint, read_state
from sa_train.training.launcher import launch

from .conftest import DIFFUSION_OVERRIDES, make_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def train_worker_processes() -> list[psutil.Process]:
    """The Ray Train worker processes of this test's Ray instance (children of its raylet) only."""
    import ray._private.worker

    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    found = []
    for proc in psutil.process_iter(["cmdline", "ppid"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if cmdline.startswith("ray::RayTrainWorker") and proc.info["ppid"] == raylet:
            found.append(proc)
    return found


def test_killed_worker_resumes_from_last_checkpoint_and_finishes(ray_local, synth_manifest, tmp_path):
    cfg = make_config(
        tmp_path, synth_manifest, DIFFUSION_OVERRIDES, "model.autoencoder.kind=none", "model.unet.in_channels=2",
        "data.window_samples=4096", "training.steps=12", "training.checkpoint_every=2", "distributed.max_failures=2",
        "tracking.run_name=killed",
    )
    run_dir = Path(cfg.storage.path) / "killed"
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(result=launch(cfg)), daemon=True)
    thread.start()

    # ray.train.report is a barrier: once step 4's files exist, step 2's checkpoint is registered.
    deadline = time.monotonic() + 300
    while not (run_dir / "step_00000004" / "state.json").exists():
        assert thread.is_alive(), "training ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 5 minutes"
        time.sleep(0.2)
    victims = train_worker_processes()
    assert victims, "found no RayTrainWorker process to kill"
    os.kill(victims[-1].pid, signal.SIGKILL)

    thread.join(timeout=600)
    assert not thread.is_alive(), "training did not finish after the restart"
    result = outcome["result"]
    state = read_state(find_latest_checkpoint(run_dir))
    assert state.step == 12
    assert state.resumed_at and state.resumed_at[0] in (2, 4)  # restarted from a checkpoint, not from scratch
    history = MlflowClient(result.tracking_uri).get_metric_history(result.mlflow_run_id, "train/step")
    assert sorted(m.step for m in history) == list(range(1, 13))  # no step logged twice
