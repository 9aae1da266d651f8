"""Both training stages on a real local Ray instance with 2 workers and real DeepSpeed engines over gloo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from sa_train.export import load_exported
from sa_train.generation import Generator
from sa_train.training.checkpoint import find_latest_checkpoint, read_state
from sa_train.training.launcher import launch

from .conftest import AUTOENCODER_OVERRIDES, DIFFUSION_OVERRIDES, make_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def autoencoder_run(ray_local, synth_manifest, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ae")
    bad = tmp / "bad"
    bad.mkdir()
    (bad / "not_audio.wav").write_text("this is a text file with an audio extension\n")
    cfg = make_config(tmp, synth_manifest, AUTOENCODER_OVERRIDES, "training.steps=3", "training.checkpoint_every=2",
                      "distributed.zero_stage=2", "tracking.run_name=ae-zero2",
                      f"data.sources=[{synth_manifest},{bad}]", "data.max_bad_fraction=0.5")
    return launch(cfg), tmp


def test_autoencoder_stage_trains_with_zero2_and_exports(autoencoder_run):
    result, tmp = autoencoder_run
    state = read_state(find_latest_checkpoint(Path(result.run_dir)))
    assert state.step == 3 and state.world_size == 2 and state.engines == ["generator", "discriminator"]
    exported = load_exported(result.exported, expect_stage="autoencoder")  # strict key check
    assert exported.meta["step"] == 3 and exported.meta["weights"] == "ema"


def test_mlflow_run_holds_params_metrics_tags_and_artifacts(autoencoder_run):
    result, tmp = autoencoder_run
    client = MlflowClient(result.tracking_uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["training.stage"] == "autoencoder"
    assert run.data.params["distributed.zero_stage"] == "2"
    assert run.data.tags["world_size"] == "2" and "version.torch" in run.data.tags
    assert run.data.tags["checkpoint_location"].endswith("step_00000003")
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == [1, 2, 3]
    for key in ("train/stft", "train/kl", "train/grad_norm", "train/lr", "perf/samples_per_s", "perf/audio_seconds_per_s"):
        assert key in run.data.metrics, key
    assert run.data.metrics["data/bad_files"] >= 1  # the text file named .wav: skipped and counted
    assert run.data.metrics["data/bad_fraction"] > 0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "exported_model", "plots", "samples"} <= artifacts
    samples = [a.path for a in client.list_artifacts(run.info.run_id, "samples/step_00000003")]
    assert any(p.endswith("_reconstruction.wav") for p in samples)
    assert any(p.endswith("_reconstruction.png") for p in samples)


def test_diffusion_stage_trains_with_zero3_then_generates_requested_lengths(autoencoder_run, synth_manifest, tmp_path):
    ae, _ = autoencoder_run
    cfg = make_config(tmp_path, synth_manifest, DIFFUSION_OVERRIDES, "training.steps=2", "training.checkpoint_every=2",
                      "distributed.zero_stage=3", f"model.autoencoder.pretrained={ae.exported}",
                      "tracking.run_name=diffusion-zero3", "training.ema.enabled=false")
    result = launch(cfg)
    state = read_state(find_latest_checkpoint(Path(result.run_dir)))
    assert state.step == 2 and state.zero_stage == 3
    # Without an EMA, samples need the whole model, which ZeRO-3 partitions: the ranks gather it.
    client = MlflowClient(result.tracking_uri)
    samples = [a.path for a in client.list_artifacts(result.mlflow_run_id, "samples/step_00000002")]
    assert any(p.endswith(".wav") for p in samples), samples
    generator = Generator.from_exported(result.exported)
    clips = generator.generate(["a sine tone at A4", "a drum pattern at 120 BPM"], [0.3, 0.6])
    assert [c.audio.shape for c in clips] == [(2, 13230), (2, 26460)]
    assert all(abs(c.audio).max() <= 1.0 for c in clips)


def test_resubmitted_run_continues_at_its_step_and_mlflow_run(autoencoder_run, synth_manifest, tmp_path):
    ae, _ = autoencoder_run
    base = [f"model.autoencoder.pretrained={ae.exported}", "tracking.run_name=resumable", "training.checkpoint_every=2",
            "distributed.zero_stage=2"]
    first = launch(make_config(tmp_path, synth_manifest, DIFFUSION_OVERRIDES, "training.steps=2", *base))
    second = launch(make_config(tmp_path, synth_manifest, DIFFUSION_OVERRIDES, "training.steps=4", *base))
    assert second.mlflow_run_id == first.mlflow_run_id
    state = read_state(find_latest_checkpoint(Path(second.run_dir)))
    assert state.step == 4 and state.resumed_at == [2] and state.samples_seen == 4 * 4
    history = MlflowClient(second.tracking_uri).get_metric_history(second.mlflow_run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]

    # Resuming with another world size is refused before any worker starts, naming both sizes.
    from sa_train.config import ConfigError

    resized = [b for b in base if not b.startswith("distributed.num_workers")]
    with pytest.raises(ConfigError, match=r"written by 2 workers .*distributed\.num_workers=1"):
        launch(make_config(tmp_path, synth_manifest, DIFFUSION_OVERRIDES, "training.steps=6", *resized,
                           "distributed.num_workers=1", "training.global_batch_size=4"))


def test_diverging_loss_stops_with_clear_error_and_last_good_checkpoint(autoencoder_run, synth_manifest, tmp_path):
    from mlflow.tracking import MlflowClient

    from sa_train.training.worker import NonFiniteLossError

    ae, _ = autoencoder_run
    cfg = make_config(
        tmp_path, synth_manifest, DIFFUSION_OVERRIDES, "training.steps=20", "training.checkpoint_every=1",
        f"model.autoencoder.pretrained={ae.exported}", "training.optimizer.lr=1e30", "training.grad_clip=0",
        # Retries allowed: a divergence must not use them up (it would diverge again from the same checkpoint).
        "training.max_nonfinite_steps=2", "distributed.max_failures=3", "tracking.run_name=diverging",
    )
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        launch(cfg)
    runs = MlflowClient(cfg.tracking.uri).search_runs(
        [MlflowClient(cfg.tracking.uri).get_experiment_by_name(cfg.tracking.experiment).experiment_id],
        filter_string="attributes.run_name = 'diverging'")
    assert [r.info.status for r in runs] == ["FAILED"]
    run_dir = Path(cfg.storage.path) / "diverging"
    good = find_latest_checkpoint(run_dir)
    assert read_state(good).step >= 1
    assert json.loads((good / "state.json").read_text())["step"] < 20


def test_preencoded_latents_train_and_a_different_autoencoder_is_refused(autoencoder_run, synth_manifest, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from sa_train.cli.main import main
    from sa_train.data.latents import LatentFormatError
    from sa_train.export import model_identity

    ae, _ = autoencoder_run
    config_file = tmp_path / "encode.yaml"
    config_file.write_text(f"data:\n  sources: [{synth_manifest}]\n  window_samples: 32768\n")
    shards = tmp_path / "latents"
    args = ["encode", str(config_file), f"model.autoencoder.pretrained={ae.exported}",
            "--autoencoder", ae.exported, "--out", str(shards), "--actors", "1"]
    assert main(args) == 0
    assert main(args) == 0  # a re-run finds every shard written and skips it

    latent_overrides = [f"model.autoencoder.pretrained={ae.exported}", f"data.latents={shards}",
                        "training.steps=2", "training.checkpoint_every=2"]
    result = launch(make_config(tmp_path, synth_manifest, DIFFUSION_OVERRIDES, *latent_overrides,
                                "tracking.run_name=from-latents"))
    assert read_state(find_latest_checkpoint(Path(result.run_dir))).step == 2

    # An autoencoder with other weights has another identity: its latents would decode to noise.
    other = tmp_path / "other_autoencoder"
    shutil.copytree(ae.exported, other)
    weights = load_file(str(other / "model.safetensors"))
    first = next(iter(weights))
    weights[first] = weights[first] + 0.01
    save_file(weights, str(other / "model.safetensors"))
    meta = json.loads((other / "meta.json").read_text())
    meta["identity"] = model_identity(other / "model.safetensors", (other / "config.yaml").read_text())
    (other / "meta.json").write_text(json.dumps(meta))
    mismatched = [o.replace(ae.exported, str(other)) for o in latent_overrides]
    with pytest.raises(LatentFormatError, match="autoencoder"):
        launch(make_config(tmp_path, synth_manifest, DIFFUSION_OVERRIDES, *mismatched, "tracking.run_name=mismatch"))


def test_a_rerun_of_a_config_trains_the_same_model_and_logs_the_same_losses(autoencoder_run, synth_manifest, tmp_path):
    """Two launches of one config (2 ranks, ZeRO-2, the audio path through the VAE) end with the same
    weights bit for bit and log the same loss at every step: the initial weights, each rank's noise,
    posterior, CFG-dropout and time-sampler streams, and the data each rank is dealt all follow the
    seed. (That the stream deals the same examples in the same order under load is tested on a
    larger corpus in tests/training/test_reproducible_stream.py.)"""
    from safetensors.torch import load_file

    from sa_train.models.diffusion_model import DiffusionModel

    ae, _ = autoencoder_run
    runs = []
    for name in ("first", "again"):
        cfg = make_config(tmp_path / name, synth_manifest, DIFFUSION_OVERRIDES, "training.steps=4",
                          "training.checkpoint_every=4", "distributed.zero_stage=2", "training.seed=5",
                          "training.ema.decay=0.5", f"model.autoencoder.pretrained={ae.exported}",
                          f"tracking.run_name=rerun-{name}")
        result = launch(cfg)
        history = MlflowClient(result.tracking_uri).get_metric_history(result.mlflow_run_id, "train/loss")
        runs.append((load_file(str(Path(result.exported) / "model.safetensors")),
                     [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)]))
    (weights, losses), (weights_again, losses_again) = runs
    assert [step for step, _ in losses] == [1, 2, 3, 4]
    assert losses_again == losses
    assert weights.keys() == weights_again.keys()
    differing = [k for k in weights if not torch.equal(weights[k], weights_again[k])]
    assert not differing, f"{len(differing)} of {len(weights)} tensors differ between the two runs, e.g. {differing[:3]}"
    # Not two untrained copies: the weights moved away from the seed's initial ones.
    torch.manual_seed(cfg.training.seed)
    initial = DiffusionModel(cfg.model).state_dict()
    common = [k for k in weights if k in initial]
    assert len(common) == len(weights), "the exported keys are the model's own"
    assert any(not torch.equal(initial[k], weights[k]) for k in common)
