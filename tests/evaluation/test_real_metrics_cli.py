"""`sa-train evaluate` end to end with the paper's three metric models (OpenL3, PaSST, CLAP), each
the real module on random weights: FD_openl3, KL_passt and the CLAP score come out finite, the
reports say the weights were random, and flag mistakes are user errors that name the fix."""

from __future__ import annotations

import json
import math
import os

import pytest

from sa_train.cli.main import main

from metric_audio import PROMPTS, write_folder

pytest.importorskip("torchopenl3")
pytest.importorskip("hear21passt")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_metrics")
    return {"reference": write_folder(root / "reference", seed=0),
            "generated": write_folder(root / "generated", seed=50), "cache": str(root / "cache")}


@pytest.mark.slow
def test_evaluate_runs_fd_openl3_kl_passt_and_clap_score_on_random_weights(folders, clap_folder, tmp_path, capsys):
    args = ["-q", "evaluate", folders["generated"], "--reference", folders["reference"],
            "--cache-dir", folders["cache"], "--embedder", "openl3", "--openl3-weights", "random",
            "--tagger", "passt", "--passt-weights", "random", "--clap", clap_folder, "--device", "cpu",
            "--no-progress", "--out", str(tmp_path / "report"), "--json"]
    assert main(args) == 0, capsys.readouterr().err
    metrics = json.loads(capsys.readouterr().out)
    for key in ("fd_openl3", "kl_passt_ref_gen", "kl_passt_gen_ref", "clap_score"):
        assert math.isfinite(metrics[key]), key
    assert metrics["fd_openl3"] > 0 and metrics["kl_passt_ref_gen"] > 0  # the folders' noise and tones differ
    assert metrics["kl_passt_gen_ref"] > 0 and metrics["kl_passt_gen_ref"] != metrics["kl_passt_ref_gen"]
    assert -1 <= metrics["clap_score"] <= 1
    assert metrics["kl_num_matched"] == len(PROMPTS) and metrics["num_clips"] == len(PROMPTS)
    # 17 frames of the four clips (see test_openl3_embedder.expected_frames)
    assert metrics["fd_num_frames"] == 17

    with open(tmp_path / "report" / "evaluation.json") as f:
        report = json.load(f)
    clips = report["clips"]
    assert metrics["kl_passt_ref_gen"] == pytest.approx(sum(c["kl"] for c in clips) / len(clips))
    assert metrics["kl_passt_gen_ref"] == pytest.approx(sum(c["kl_gen_ref"] for c in clips) / len(clips))
    assert report["settings"]["embedder"]["settings"]["weights"] == "random(seed=0)"
    assert report["settings"]["tagger"]["settings"]["weights"] == "random(seed=0)"
    random_notes = [n for n in report["notes"] if "random weights" in n]
    assert len(random_notes) == 2 and all("means nothing" in n for n in random_notes)
    cached = sorted(os.listdir(folders["cache"]))
    assert [name.split("_")[:2] for name in cached] == [["fd", "openl3"], ["kl", "passt"]]


def test_evaluate_names_the_missing_weight_file(folders, tmp_path, capsys):
    args = ["evaluate", folders["generated"], "--reference", folders["reference"], "--embedder", "openl3",
            "--openl3-weights", str(tmp_path), "--tagger", "none"]
    assert main(args) == 2
    assert "has no torchopenl3_mel256_music_512.pth.tar" in capsys.readouterr().err
    args = ["evaluate", folders["generated"], "--reference", folders["reference"], "--embedder", "none",
            "--tagger", "passt", "--passt-weights", str(tmp_path)]
    assert main(args) == 2
    assert "has no passt-s-f128-p16-s10-ap.476-swa.pt" in capsys.readouterr().err


def test_evaluate_rejects_a_weights_flag_for_a_model_it_does_not_use(folders, capsys):
    assert main(["evaluate", folders["generated"], "--passt-weights", "random"]) == 2
    assert "--passt-weights is given but its model is not used" in capsys.readouterr().err
