"""Sweeps measure timing only where it can fail: requested lengths against each trial's window."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from sa_train.config import ConfigError, load_config
from sa_train.data.synth import DEFAULT_MAX_SECONDS, write_synth_dataset
from sa_train.evaluation.timing import MIN_ROOM_SECONDS
from sa_train.sweep.config import check_evaluation_inputs, load_sweep
from sa_train.sweep.evaluation import requested_clips
from sa_train.sweep.report import FINISHED, TrialRow, write_report

ROOT = Path(__file__).resolve().parents[1]
TINY_SWEEPS = [ROOT / "sweeps" / "tiny_text_encoder_ablation.yaml", ROOT / "sweeps" / "tiny_timing_ablation.yaml"]
TINY_EXPERIMENT = ROOT / "configs" / "experiments" / "tiny_diffusion.yaml"
# The waveform U-Net with the old tiny sweeps' 4096-sample window: 0.093 s at 44.1 kHz.
SHORT_WINDOW = ["model.autoencoder.kind=none", "model.autoencoder.pretrained=null", "model.unet.in_channels=2",
                "data.window_samples=4096"]


def write_sweep(tmp_path: Path, metric: str, evaluation: dict, search_space: dict | None = None) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "experiment": str(TINY_EXPERIMENT), "overrides": SHORT_WINDOW, "metric": metric,
        "search_space": search_space or {"model.conditioning.timing.kind": {"grid": ["per_second", "none"]}},
        "evaluation": {"enabled": True, **evaluation},
    }))
    return path


def test_a_timing_sweep_whose_prompts_ask_for_more_than_the_window_is_refused_before_any_trial(tmp_path):
    from sa_train.sweep.runner import run_sweep

    spec = load_sweep(write_sweep(tmp_path, "timing_mae_s", {"prompts": ["a tone", "a drum pattern"],
                                                              "seconds_total": [1.0, 2.0]}))
    with pytest.raises(ConfigError) as err:
        check_evaluation_inputs(spec)
    message = str(err.value)
    for part in ("metric='timing_mae_s'", "seconds_total of 1, 2 s", "evaluation.seconds_total",
                 "data.window_samples=4096", "0.0929 s", "no length can here", "raise data.window_samples to at least 92610"):
        assert part in message, message

    launched = []
    with pytest.raises(ConfigError, match="cannot be measured"):
        run_sweep(spec, launch=lambda *args, **kwargs: launched.append(args))
    assert not launched


@pytest.mark.parametrize("evaluation, source", [
    ({"prompts": ["a tone"], "seconds_total": [4096 / 44100]}, "evaluation.seconds_total"),  # exactly the window
    ({"prompts": ["a tone"]}, "default to the whole window"),  # no length: the window, which leaves no room
])
def test_a_requested_length_equal_to_the_window_cannot_rank_a_timing_sweep(tmp_path, evaluation, source):
    spec = load_sweep(write_sweep(tmp_path, "timing_mae_s", evaluation))
    with pytest.raises(ConfigError, match="cannot be measured") as err:
        check_evaluation_inputs(spec)
    assert source in str(err.value)


def test_lengths_from_a_prompts_file_are_named_with_the_file(tmp_path):
    manifest = tmp_path / "prompts.jsonl"
    manifest.write_text(json.dumps({"caption": "a sine tone at A4, 2.31 seconds", "seconds": 2.31}) + "\n")
    spec = load_sweep(write_sweep(tmp_path, "timing_bias_s", {"prompts_file": str(manifest)}))
    with pytest.raises(ConfigError, match=r"seconds_total of 2\.31 s \(from evaluation\.prompts_file \(.*prompts\.jsonl\)\)"):
        check_evaluation_inputs(spec)


def test_a_sweep_ranked_by_another_metric_is_told_its_timing_will_be_not_measurable(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, "kl_synth_kind_ref_gen", {"prompts": ["a tone"], "seconds_total": [2.0]}))
    warnings = check_evaluation_inputs(spec)
    assert len(warnings) == 1 and "not measurable (n/a)" in warnings[0] and "0.0929 s" in warnings[0]


def test_a_searched_window_too_short_for_the_requests_is_refused(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, "timing_mae_s", {"prompts": ["a tone"], "seconds_total": [1.0]},
                                  {"data.window_samples": {"grid": [65536, 4096]}}))
    with pytest.raises(ConfigError, match="data.window_samples=4096 "):
        check_evaluation_inputs(spec)  # 65536 samples (1.49 s) fit; the 4096-sample trial does not


def test_requests_that_fit_the_window_pass_quietly(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, "timing_mae_s", {"prompts": ["a tone"], "seconds_total": [1.0]}),
                      ["data.window_samples=65536"])
    assert check_evaluation_inputs(spec) == []


@pytest.mark.parametrize("path", TINY_SWEEPS, ids=[p.stem for p in TINY_SWEEPS])
def test_the_shipped_tiny_sweeps_request_lengths_that_fit_their_windows(path, tmp_path):
    raw = yaml.safe_load(path.read_text())
    overrides = dict(item.split("=", 1) for item in raw["overrides"])
    spec = load_sweep(path)
    cfg = load_config(spec.experiment, spec.overrides)
    window = cfg.data.window_samples / cfg.data.sample_rate
    assert int(overrides["data.window_samples"]) == cfg.data.window_samples
    # Every file `sa-train data synth` writes (1 to 2.97 s) fits, with room for a late end to show.
    assert window >= DEFAULT_MAX_SECONDS + MIN_ROOM_SECONDS and window >= 3.5
    assert cfg.training.sample_seconds and max(cfg.training.sample_seconds) < window

    # The README's dataset, as the sweep reads it: the lengths spread over 1-3 s, every one fits.
    write_synth_dataset(str(tmp_path / "synth"), 32, fmt="wav")
    spec = load_sweep(path, [f"evaluation.prompts_file={tmp_path / 'synth' / 'manifest.jsonl'}",
                             f"evaluation.reference={tmp_path / 'synth'}"])
    lengths = [r.seconds_total for r in requested_clips(spec.config.evaluation, window)]
    assert len(lengths) == spec.config.evaluation.max_clips and max(lengths) - min(lengths) >= 1.0
    assert check_evaluation_inputs(spec) == []


def test_report_shows_timing_it_could_not_measure_as_na_never_zero(tmp_path):
    rows = [
        TrialRow("t_00000", FINISHED, {"model.conditioning.text_encoder.kind": "embedded"},
                 {"kl_synth_kind_ref_gen": 0.9, "timing_num_unmeasurable": 8.0, "loss": 0.5, "step": 30.0}),
        TrialRow("t_00001", FINISHED, {"model.conditioning.text_encoder.kind": "t5"},
                 {"kl_synth_kind_ref_gen": 1.2, "timing_num_unmeasurable": 8.0, "loss": 0.4, "step": 30.0}),
    ]
    files = write_report(rows, tmp_path, title="Sweep", metric="kl_synth_kind_ref_gen", mode="min")

    lines = files["ablation.md"].read_text().splitlines()
    header = next(line for line in lines if line.startswith("| trial")).split(" | ")
    column = header.index("timing MAE (s)")
    cells = [line.split(" | ")[column] for line in lines if line.startswith("| t_")]
    assert cells == ["n/a", "n/a"]
    assert any(line.startswith("Timing n/a:") for line in lines)
    with files["ablation.csv"].open() as handle:
        assert all(r.get("timing_mae_s", "") == "" for r in csv.DictReader(handle))
    assert "timing_mae_s.png" not in files  # no chart of bars that would all read 0
