"""`sa-train demo`'s code path end to end with very few steps, checked as a user would check it."""

from __future__ import annotations

import json

import pytest
import soundfile
from mlflow.tracking import MlflowClient

from sa_train.demo import DEMO_PROMPTS, DIFFUSION_WINDOW, FIGURES, DemoSettings, run_demo, summary

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo(ray_local, tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    settings = DemoSettings(workdir=work, num_files=8, autoencoder_steps=2, diffusion_steps=2, sample_steps=2)
    return run_demo(settings)


def test_the_demo_writes_wavs_of_the_requested_lengths_and_whole_windows(demo):
    work = demo["workdir"]
    for name in ("trained", "untrained"):
        wavs = sorted((work / "generated" / name).glob("*.wav"))
        assert len(wavs) == len(DEMO_PROMPTS)
        lengths = sorted(soundfile.info(str(p)).duration for p in wavs)
        assert lengths == pytest.approx(sorted(s for _, s in DEMO_PROMPTS), abs=1e-3)
        windows = {soundfile.info(str(p)).frames for p in (work / "generated" / name / "full_window").glob("*.wav")}
        assert windows == {DIFFUSION_WINDOW}
    assert len({s for _, s in DEMO_PROMPTS}) >= 4 and DIFFUSION_WINDOW / 44100 >= 6


def test_the_demo_mlflow_store_holds_both_runs_with_metrics_and_artifacts(demo):
    client = MlflowClient(demo["tracking_uri"])
    for run_result in (demo["autoencoder"], demo["diffusion"]):
        run = client.get_run(run_result.mlflow_run_id)
        assert run.info.status == "FINISHED"
        assert "train/loss" in run.data.metrics
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "exported_model", "plots"} <= artifacts


def test_the_demo_summary_shows_trained_and_untrained_and_summary_json_holds_them(demo):
    text = summary(demo)
    assert "untrained" in text and "trained" in text and "summary.json" in text
    data = json.loads((demo["workdir"] / "summary.json").read_text())
    for section in ("trained", "untrained"):
        assert set(data[section]) == {key for key, _, _ in FIGURES}
        for key in ("vae_si_sdr_db", "vae_silence_dbfs", "timing_within_second_fraction", "timing_mae_s",
                    "adherence_kind_pass_rate", "vae_kind_pass_rate"):
            assert isinstance(data[section][key], float), (section, key)
        assert set(data["vae_kinds_lost"][section]) <= {"tone", "chord", "noise", "drums"}
    assert data["timings_s"]["total"] > 0
