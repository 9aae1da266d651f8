"""An exported diffusion model logged as an MLflow pyfunc model: it loads with
mlflow.pyfunc.load_model and generates audio of the requested length, and its registered version
carries lineage tags (autoencoder identity, data manifest hash, git commit, source run)."""

from __future__ import annotations

import json
import math

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from tiny_exports import tiny_exports, write_manifest

from sa_train.config import from_yaml, to_yaml
from sa_train.tracking.lineage import data_manifest_hash
from sa_train.tracking.mlflow_model import (LINEAGE_TAGS, TAG_AUTOENCODER, TAG_COMMIT, TAG_DATA, TAG_IDENTITY,
                                            TAG_SOURCE_RUN, log_exported_model, log_training_export, read_requests)

TRAINING_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def store(tmp_path):
    """A real local MLflow store (SQLite + artifact folder) holding one finished training run."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("sa_train", artifact_location=(tmp_path / "mlartifacts").as_uri())
    run = client.create_run(experiment, run_name="diffusion-tiny", tags={TAG_COMMIT: TRAINING_COMMIT})
    client.set_terminated(run.info.run_id)
    previous = mlflow.get_tracking_uri()
    yield uri, run.info.run_id
    mlflow.set_tracking_uri(previous)


@pytest.fixture
def exports(tmp_path, store):
    _, run_id = store
    manifest = write_manifest(tmp_path / "data" / "manifest.jsonl")
    vae, diffusion = tiny_exports(tmp_path, manifest, mlflow_run_id=run_id)
    return vae, diffusion, manifest


def test_logged_model_loads_with_pyfunc_and_generates_the_requested_lengths(store, exports):
    uri, run_id = store
    vae, diffusion, _ = exports
    logged = log_exported_model(diffusion, uri, register_as="tiny_text_to_audio")  # the run comes from meta.json
    assert logged.run_id == run_id and logged.version == "1"
    # The model lives in the run's experiment and its artifact store, nowhere else.
    client = MlflowClient(uri)
    model = client.get_logged_model(logged.model_uri.split("/")[-1])
    assert model.experiment_id == client.get_run(run_id).info.experiment_id
    assert model.artifact_location.startswith(client.get_experiment(model.experiment_id).artifact_location)

    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/tiny_text_to_audio/1")
    clips = model.predict({"prompt": ["a sine tone", "white noise"], "seconds_total": [0.25, 0.5]},
                          params={"steps": 2, "seed": 3})
    cfg = from_yaml((diffusion / "config.yaml").read_text())
    rate = cfg.data.sample_rate
    assert [c["prompt"] for c in clips] == ["a sine tone", "white noise"]
    for clip, seconds in zip(clips, [0.25, 0.5]):
        assert clip["sample_rate"] == rate
        assert clip["audio"].dtype == np.float32 and clip["audio"].shape == (2, math.ceil(seconds * rate))
        assert np.isfinite(clip["audio"]).all() and np.abs(clip["audio"]).max() > 0
    # Loading from the run's model URI gives the same audio for the same seed: it is the same model.
    again = mlflow.pyfunc.load_model(logged.model_uri).predict(
        {"prompt": ["a sine tone", "white noise"], "seconds_total": [0.25, 0.5]}, params={"steps": 2, "seed": 3})
    np.testing.assert_allclose(again[0]["audio"], clips[0]["audio"], atol=1e-5)


def test_registered_version_carries_the_lineage_tags(store, exports, tmp_path):
    uri, run_id = store
    vae, diffusion, manifest = exports
    log_exported_model(diffusion, uri, register_as="tiny_lineage")
    version = MlflowClient(uri).get_model_version("tiny_lineage", "1")
    tags = version.tags
    assert set(LINEAGE_TAGS) <= set(tags)
    assert tags[TAG_AUTOENCODER] == json.loads((vae / "meta.json").read_text())["identity"]
    assert tags[TAG_IDENTITY] == json.loads((diffusion / "meta.json").read_text())["identity"]
    assert tags[TAG_COMMIT] == TRAINING_COMMIT  # the training run's commit, not this checkout's
    assert tags[TAG_SOURCE_RUN] == run_id and version.run_id == run_id
    cfg = from_yaml((diffusion / "config.yaml").read_text())
    assert len(tags[TAG_DATA]) == 64 and tags[TAG_DATA] == data_manifest_hash(cfg.data)
    # The hash names the data: another manifest row gives another hash.
    write_manifest(manifest, rows=4)
    assert data_manifest_hash(cfg.data) != tags[TAG_DATA]


def test_the_data_hash_of_a_folder_follows_its_listing(tmp_path):
    from sa_train.config import load_config

    folder = tmp_path / "audio"
    folder.mkdir()
    (folder / "a.wav").write_bytes(b"x" * 10)
    cfg = load_config(None, ["training.stage=autoencoder", f"data.sources=[{folder}]"])
    first = data_manifest_hash(cfg.data)
    assert first == data_manifest_hash(cfg.data)
    (folder / "b.wav").write_bytes(b"y")
    assert data_manifest_hash(cfg.data) != first
    missing = load_config(None, ["training.stage=autoencoder", f"data.sources=[{tmp_path / 'nowhere'}]"])
    assert data_manifest_hash(missing.data).startswith("unreadable: data source")


def test_only_a_diffusion_export_is_logged_and_bad_requests_are_named(store, exports):
    uri, _ = store
    vae, _, _ = exports
    with pytest.raises(ValueError, match="only a diffusion model generates audio"):
        log_exported_model(vae, uri)
    with pytest.raises(ValueError, match="not an exported sa_train model"):
        log_exported_model(vae.parent, uri)
    with pytest.raises(ValueError, match="'prompt' and 'seconds_total'"):
        read_requests({"prompt": ["rain"]})
    with pytest.raises(ValueError, match="2 prompts and 3 seconds_total"):
        read_requests({"prompt": ["rain", "wind"], "seconds_total": [1, 2, 3]})
    assert read_requests([{"prompt": "rain", "seconds_total": 2}]) == (["rain"], [2.0])


def test_the_end_of_training_logs_a_pyfunc_model_for_diffusion_and_files_for_an_autoencoder(store, exports):
    uri, run_id = store
    vae, diffusion, _ = exports
    assert log_training_export(vae, uri, run_id) is None
    logged = log_training_export(diffusion, uri, run_id)
    assert logged is not None and logged.run_id == run_id and logged.version is None
    files = {a.path for a in MlflowClient(uri).list_artifacts(run_id, "exported_model")}
    assert "exported_model/meta.json" in files
    mlflow.set_tracking_uri(uri)
    assert mlflow.pyfunc.load_model(logged.model_uri).metadata.signature.inputs.input_names() == ["prompt",
                                                                                                 "seconds_total"]
    # A store that is gone is logged, not raised: the training result stands.
    assert log_training_export(diffusion, uri, "no-such-run") is None


def test_the_end_of_training_logs_only_files_when_the_export_names_no_autoencoder(store, exports, tmp_path, caplog):
    """Diffusion trained on latents without model.autoencoder.pretrained: nothing can decode its
    latents, so the files are logged and one warning says why (no traceback, no error)."""
    import shutil

    uri, run_id = store
    _, diffusion, _ = exports
    bare = tmp_path / "bare"
    shutil.copytree(diffusion, bare)
    cfg = from_yaml((bare / "config.yaml").read_text())
    cfg.model.autoencoder.pretrained = None
    cfg.data.latents = str(tmp_path / "latents")  # what such a run trained on
    (bare / "config.yaml").write_text(to_yaml(cfg))
    with caplog.at_level("WARNING", logger="sa_train.tracking.mlflow_model"):
        assert log_training_export(bare, uri, run_id) is None
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "names no autoencoder" in caplog.records[0].getMessage()
    assert "exported_model/meta.json" in {a.path for a in MlflowClient(uri).list_artifacts(run_id, "exported_model")}


def test_cli_register_and_export_register(store, exports, tmp_path, capsys):
    from tiny_exports import write_checkpoint

    from sa_train.cli.main import main

    uri, run_id = store
    vae, diffusion, _ = exports
    assert main(["-q", "register", str(diffusion), "--name", "cli_model", "--tracking-uri", uri]) == 0
    assert "registered as cli_model version 1" in capsys.readouterr().out
    assert main(["-q", "register", str(vae), "--name", "cli_model", "--tracking-uri", uri]) == 2
    assert "only a diffusion model generates audio" in capsys.readouterr().err
    # export --register: the run folder's checkpoint names the MLflow run, which the version records.
    cfg = from_yaml((diffusion / "config.yaml").read_text())
    run_dir = tmp_path / "runs" / "again"
    write_checkpoint(run_dir, cfg, step=4, mlflow_run_id=run_id)
    code = main(["-q", "export", str(run_dir), "--out", str(tmp_path / "again"), "--register", "cli_model",
                 "--tracking-uri", uri])
    assert code == 0 and "version 2" in capsys.readouterr().out
    version = MlflowClient(uri).get_model_version("cli_model", "2")
    assert version.run_id == run_id and version.tags["sa_train.step"] == "4"
