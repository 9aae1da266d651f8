"""The MLflow run of a training run, with a real SQLite store: which run a launch continues, how it
ends when the driver stops, and where its checkpoint tag points. No Ray: the fit is faked."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from sa_train.config import load_config
from sa_train.tracking.mlflow_tracker import CHECKPOINT_TAG, RESUMED_FROM_TAG, closed_on_error
from sa_train.tracking.train_callbacks import CheckpointLocationTag
from sa_train.training import launcher
from sa_train.training.checkpoint import TrainState, latest_checkpoint_state, save_rng, write_state


def write_checkpoint(run_dir: Path, step: int, mlflow_run_id: str | None, world_size: int = 2) -> Path:
    """A complete ZeRO-0 checkpoint as the workers leave it, holding an MLflow run id."""
    state = TrainState(step=step, world_size=world_size, engines=["model"], mlflow_run_id=mlflow_run_id)
    directory = run_dir / state.tag()
    (directory / "model" / state.tag()).mkdir(parents=True)
    (directory / "model" / state.tag() / "mp_rank_00_model_states.pt").write_bytes(b"x")
    for rank in range(world_size):
        save_rng(directory, rank)
    (directory / "model.safetensors").write_bytes(b"x")
    write_state(directory, state, "model: {}\n", ema=None)
    return directory


@pytest.fixture
def fake_fit(monkeypatch):
    """launch() up to the fit: no Ray; the fit records its MLflow run id, or raises ``fake_fit.error``."""
    import sa_train.ray_session

    monkeypatch.setattr(sa_train.ray_session, "ensure_ray", lambda **kwargs: None)
    monkeypatch.setattr(launcher, "cluster_nodes", lambda: ({"this-machine": {"CPU": 64.0}}, "this-machine"))
    calls = SimpleNamespace(run_ids=[], callbacks=[], error=None)

    def train(cfg, run_dir, gpu, tracking_uri, run_id, callbacks, export, progress_label):
        calls.run_ids.append(run_id)
        calls.callbacks.append(callbacks)
        if calls.error is not None:
            raise calls.error
        return launcher.TrainRunResult(cfg.tracking.run_name, run_dir, None, None, run_id, tracking_uri)

    monkeypatch.setattr(launcher, "_train", train)
    return calls


def run_config(tmp_path: Path, name: str = "reused"):
    return load_config(None, [
        "model.autoencoder.pretrained=x", "distributed.device=cpu", f"tracking.run_name={name}",
        f"storage.path={tmp_path / 'runs'}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ])


def test_a_new_run_reusing_a_name_gets_a_new_mlflow_run_and_a_resumed_one_continues_its_checkpoints(
        tmp_path, fake_fit):
    first = launcher.launch(run_config(tmp_path)).mlflow_run_id
    second = launcher.launch(run_config(tmp_path)).mlflow_run_id  # same name, no checkpoint: a new run
    assert second != first
    write_checkpoint(tmp_path / "runs" / "reused", step=4, mlflow_run_id=first)
    resumed = launcher.launch(run_config(tmp_path)).mlflow_run_id
    assert resumed == first and fake_fit.run_ids == [first, second, first]
    assert MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(first).info.status == "FINISHED"


def test_a_checkpoint_whose_mlflow_run_is_not_in_the_store_goes_on_in_a_new_run(tmp_path, fake_fit):
    write_checkpoint(tmp_path / "runs" / "moved", step=2, mlflow_run_id="0123456789abcdef0123456789abcdef")
    result = launcher.launch(run_config(tmp_path, "moved"))
    run = MlflowClient(result.tracking_uri).get_run(result.mlflow_run_id)
    assert run.data.tags[RESUMED_FROM_TAG] == "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(("error", "status"), [
    (RuntimeError("workers failed"), "FAILED"),
    (KeyboardInterrupt(), "KILLED"),  # Ctrl-C
    (SystemExit(15), "KILLED"),  # SIGTERM (`ray job stop`): Ray's driver handler calls sys.exit
])
def test_the_mlflow_run_is_closed_when_the_driver_stops_abnormally(tmp_path, fake_fit, error, status):
    fake_fit.error = error
    with pytest.raises(type(error)):
        launcher.launch(run_config(tmp_path))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(fake_fit.run_ids[0]).info.status == status


def test_the_checkpoint_tag_follows_every_reported_checkpoint(tmp_path, fake_fit):
    result = launcher.launch(run_config(tmp_path))
    tag = next(c for c in fake_fit.callbacks[0] if isinstance(c, CheckpointLocationTag))
    client = MlflowClient(result.tracking_uri)
    for step in (2, 4):
        checkpoint = SimpleNamespace(path=f"bucket/runs/reused/step_{step:08d}")  # Ray drops the URI scheme
        tag.after_report(run_context=None, metrics=[{}], checkpoint=checkpoint)
        location = client.get_run(result.mlflow_run_id).data.tags[CHECKPOINT_TAG]
        assert location == f"{tmp_path / 'runs' / 'reused'}/step_{step:08d}"
    tag.after_report(run_context=None, metrics=[{}], checkpoint=None)  # a report without a checkpoint
    assert client.get_run(result.mlflow_run_id).data.tags[CHECKPOINT_TAG].endswith("step_00000004")


def test_a_tracking_outage_at_a_checkpoint_is_counted_and_never_raises(tmp_path):
    tag = CheckpointLocationTag(f"sqlite:///{tmp_path / 'missing' / 'mlflow.db'}", "no-such-run", "s3://b/runs/x")
    tag.after_report(run_context=None, metrics=[{}], checkpoint=SimpleNamespace(path="b/runs/x/step_00000002"))
    assert tag.failures == 1


def test_closed_on_error_leaves_a_finished_body_alone(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    with closed_on_error(uri, run_id):
        pass
    assert client.get_run(run_id).info.status == "RUNNING"


def test_the_resume_state_is_read_from_remote_storage_too(tmp_path):
    write_checkpoint(tmp_path / "run", step=2, mlflow_run_id="a")
    write_checkpoint(tmp_path / "run", step=6, mlflow_run_id="a")
    state = latest_checkpoint_state(f"file://{tmp_path / 'run'}")
    assert state.step == 6 and state.mlflow_run_id == "a"
    assert latest_checkpoint_state(f"file://{tmp_path / 'empty'}") is None


def test_a_sweep_trial_retried_before_its_first_checkpoint_records_into_its_newest_run(tmp_path):
    import time

    from sa_train.sweep.tracking import find_child_run
    from sa_train.tracking.mlflow_tracker import PARENT_TAG, RUN_NAME_TAG

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("sweep")
    parent = client.create_run(experiment).info.run_id
    tags = {PARENT_TAG: parent, RUN_NAME_TAG: "sweep-trial_1"}
    client.create_run(experiment, tags=tags, start_time=int(time.time() * 1000) - 60_000)
    retried = client.create_run(experiment, tags=tags).info.run_id
    assert find_child_run(uri, parent, "sweep-trial_1") == retried
