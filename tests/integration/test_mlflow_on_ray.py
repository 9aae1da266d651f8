"""The MLflow run of a real Ray Train run: the checkpoint tag moves at every checkpoint while the
run trains, and a resubmitted run continues the MLflow run its checkpoint names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray.train
from mlflow.tracking import MlflowClient

from sa_train.tracking.code_version import git_commit
from sa_train.tracking.mlflow_tracker import CHECKPOINT_TAG
from sa_train.training.launcher import launch

from .conftest import DIFFUSION_OVERRIDES, make_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAVEFORM = ["model.autoencoder.kind=none", "model.unet.in_channels=2", "data.window_samples=4096",
            "training.checkpoint_every=2", "tracking.run_name=tagged"]


class TagWatcher(ray.train.UserCallback):
    """Runs in Ray Train's controller before sa_train's own callback: at each report it writes the
    checkpoint tag the MLflow run holds (set at the previous checkpoint) to a file."""

    def __init__(self, tracking_uri: str, out: str):
        self.tracking_uri, self.out = tracking_uri, out

    def after_report(self, run_context, metrics, checkpoint):
        client = MlflowClient(self.tracking_uri)
        experiment = client.get_experiment_by_name("sa_train").experiment_id
        runs = client.search_runs([experiment], filter_string="tags.`sa_train.run_name` = 'tagged'")
        with open(self.out, "a") as handle:
            handle.write(json.dumps(runs[0].data.tags.get(CHECKPOINT_TAG) if runs else None) + "\n")


def test_the_checkpoint_tag_moves_while_training_and_a_resubmitted_run_continues_its_mlflow_run(
        ray_local, synth_manifest, tmp_path):
    first_cfg = make_config(tmp_path, synth_manifest, DIFFUSION_OVERRIDES, *WAVEFORM, "training.steps=4")
    seen = tmp_path / "tags_seen.jsonl"
    first = launch(first_cfg, callbacks=[TagWatcher(first_cfg.tracking.uri, str(seen))], export=False)
    tags_seen = [json.loads(line) for line in seen.read_text().splitlines()]
    assert tags_seen[0] is None and tags_seen[-1] == f"{first.run_dir}/step_00000002", tags_seen

    second = launch(make_config(tmp_path, synth_manifest, DIFFUSION_OVERRIDES, *WAVEFORM, "training.steps=6"),
                    export=False)
    assert second.mlflow_run_id == first.mlflow_run_id
    client = MlflowClient(second.tracking_uri)
    run = client.get_run(second.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags[CHECKPOINT_TAG] == f"{second.run_dir}/step_00000006"
    assert run.data.tags["git_commit"] == git_commit()
    assert run.data.metrics["system/tracking_failures"] == 0
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/step")) == list(range(1, 7))
