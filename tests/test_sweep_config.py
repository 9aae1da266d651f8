"""Sweep files, search spaces, trial resources and the ablation report, without starting Ray."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sa_train.config import ConfigError, load_config
from sa_train.sweep.config import SweepEvaluationConfig, TrialResourcesConfig, load_sweep, split_overrides
from sa_train.sweep.evaluation import evaluation_requests
from sa_train.sweep.report import FAILED, FINISHED, STOPPED, TrialRow, best_trial, write_report
from sa_train.sweep.resources import TrialResources, max_concurrent_trials, trial_resources
from sa_train.sweep.space import (
    check_trial_configs, count_trials, parse_search_space, trial_overrides, trial_values, tune_param_space,
)
from sa_train.config.paths import absolute_local_paths

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "sweeps").glob("*.yaml"))
TINY_EXPERIMENT = ROOT / "configs" / "experiments" / "tiny_diffusion.yaml"
WAVEFORM_OVERRIDES = ["model.autoencoder.kind=none", "model.autoencoder.pretrained=null", "model.unet.in_channels=2",
                      "data.window_samples=4096"]


def write_sweep(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(f"experiment: {TINY_EXPERIMENT}\noverrides: {json.dumps(WAVEFORM_OVERRIDES)}\n" + text)
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_sweeps_load_and_every_trial_config_is_valid(path):
    spec = load_sweep(path)
    dims = parse_search_space(spec.config.search_space, spec.path)
    configs = check_trial_configs(spec.experiment, spec.overrides, dims, spec.path)

    assert spec.name == path.stem
    assert count_trials(dims, spec.config.num_samples) >= 3
    assert len(configs) > count_trials(dims, 1)  # the base config plus one per searched value
    searched = {c.model.conditioning.text_encoder.kind for c in configs[1:]} | {c.model.conditioning.timing.kind
                                                                               for c in configs[1:]}
    assert len(searched) >= 3


def test_shipped_sweeps_cover_both_ablations_at_both_scales():
    names = {p.stem for p in SHIPPED}
    assert {"text_encoder_ablation", "timing_ablation", "tiny_text_encoder_ablation", "tiny_timing_ablation"} <= names
    tiny = load_sweep(ROOT / "sweeps" / "tiny_text_encoder_ablation.yaml")
    cfg = load_config(tiny.experiment, tiny.overrides)
    assert cfg.distributed.num_workers == 1 and cfg.model.autoencoder.kind == "none"


def test_unknown_sweep_key_is_an_error_that_suggests_the_right_one(tmp_path):
    path = write_sweep(tmp_path, "num_sample: 2\nsearch_space: {training.seed: {grid: [0, 1]}}\n")
    with pytest.raises(ConfigError, match=r"num_sample.*did you mean 'num_samples'"):
        load_sweep(path)


def test_search_key_missing_from_the_config_schema_fails_with_a_suggestion(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, "search_space: {model.conditioning.timing.knd: {grid: [none]}}\n"))
    with pytest.raises(ConfigError, match=r"timing.knd.*not a config key.*did you mean 'model.conditioning.timing.kind'"):
        parse_search_space(spec.config.search_space, spec.path)


def test_bad_search_value_names_the_key_and_value_before_any_trial(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, "search_space: {model.conditioning.timing.kind: {grid: [fourier, daily]}}\n"))
    dims = parse_search_space(spec.config.search_space, spec.path)
    with pytest.raises(ConfigError, match=r"timing.kind'\] value 'daily'.*choose one of"):
        check_trial_configs(spec.experiment, spec.overrides, dims, spec.path)


def test_an_invalid_combination_of_valid_values_is_caught(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, "search_space:\n"
                                  "  model.conditioning.timing.kind: {grid: [per_second, none]}\n"
                                  "  model.conditioning.timing.global_condition: {grid: [false, true]}\n"))
    dims = parse_search_space(spec.config.search_space, spec.path)
    with pytest.raises(ConfigError, match=r"combination .*kind='none'.*global_condition=True"):
        check_trial_configs(spec.experiment, spec.overrides, dims, spec.path)


@pytest.mark.parametrize("space, message", [
    ("{model.conditioning.text_encoder: {grid: [t5, clap]}}", "is a section, so each grid value must be a mapping"),
    ("{tracking.experiment: {grid: [a, b]}}", "set by the sweep per trial"),
    ("{training.optimizer.lr: {loguniform: [0, 1.0e-3]}}", "low > 0"),
    ("{training.seed: {sometimes: [1, 2]}}", "must be one of"),
    ("{training.seed: {grid: []}}", "non-empty list"),
])
def test_malformed_search_spaces_are_clear_errors(tmp_path, space, message):
    spec = load_sweep(write_sweep(tmp_path, f"search_space: {space}\n"))
    with pytest.raises(ConfigError, match=message):
        parse_search_space(spec.config.search_space, spec.path)


def test_evaluation_metric_needs_the_evaluation(tmp_path):
    with pytest.raises(ConfigError, match="only reported by the evaluation"):
        load_sweep(write_sweep(tmp_path, "metric: fd_spectral\nsearch_space: {training.seed: {grid: [0, 1]}}\n"))


def test_command_line_overrides_go_to_the_sweep_or_to_every_trial():
    sweep, experiment = split_overrides(["name=x", "evaluation.enabled=true", "storage=/s", "storage.path=/r",
                                         "training.steps=5", "model.unet.base_width=16"])
    assert sweep == ["name=x", "evaluation.enabled=true", "storage=/s"]
    assert experiment == ["storage.path=/r", "training.steps=5", "model.unet.base_width=16"]


def test_section_values_become_overrides_that_load_back_unchanged(tmp_path):
    odd_path = str(tmp_path / "my models: v1" / "clap")
    spec = load_sweep(write_sweep(tmp_path, "search_space:\n  model.conditioning.text_encoder:\n    grid:\n"
                                  f"      - {{kind: clap, name_or_path: {json.dumps(odd_path)}, layer: -3}}\n"
                                  "      - {kind: embedded, name_or_path: null}\n"
                                  "  training.optimizer.lr: {uniform: [1.0e-4, 2.0e-4]}\n"), ["training.steps=3"])
    dims = parse_search_space(spec.config.search_space, spec.path)
    space = tune_param_space(dims)
    assert set(space) == {"model.conditioning.text_encoder", "training.optimizer.lr"}

    sampled = {"model.conditioning.text_encoder": 0, "training.optimizer.lr": 1.5e-4}
    cfg = load_config(spec.experiment, [*spec.overrides, *trial_overrides(dims, sampled)])
    text = cfg.model.conditioning.text_encoder
    assert (text.kind, text.name_or_path, text.layer) == ("clap", odd_path, -3)
    assert cfg.training.optimizer.lr == pytest.approx(1.5e-4) and cfg.training.steps == 3
    assert trial_values(dims, {**sampled, "model.conditioning.text_encoder": 1})["model.conditioning.text_encoder"] == {
        "kind": "embedded", "name_or_path": None}


def test_relative_local_folders_become_absolute_but_hub_ids_stay(tmp_path):
    (tmp_path / "models" / "clap").mkdir(parents=True)
    cfg = load_config(TINY_EXPERIMENT, [*WAVEFORM_OVERRIDES, "model.conditioning.text_encoder.kind=clap",
                                         "model.conditioning.text_encoder.name_or_path=models/clap",
                                         "data.sources=[data/missing, s3://bucket/x]"])
    absolute_local_paths(cfg, tmp_path)
    assert cfg.model.conditioning.text_encoder.name_or_path == str(tmp_path / "models" / "clap")
    assert cfg.data.sources == ["data/missing", "s3://bucket/x"]

    cfg.model.conditioning.text_encoder.name_or_path = "laion/clap-htsat-unfused"
    absolute_local_paths(cfg, tmp_path)
    assert cfg.model.conditioning.text_encoder.name_or_path == "laion/clap-htsat-unfused"


def _needs(workers=1, device="cpu", cluster=None, **settings):
    cfg = load_config(TINY_EXPERIMENT, [*WAVEFORM_OVERRIDES, f"distributed.num_workers={workers}",
                                        f"distributed.device={device}", "training.global_batch_size=4"])
    return trial_resources([cfg], TrialResourcesConfig(**settings), cluster or {})


def test_concurrency_leaves_each_trial_its_workers_driver_and_data_cpus():
    laptop = {"CPU": 4.0}
    assert _needs(1).cpus == 3 and max_concurrent_trials(_needs(1), laptop, None) == 1
    assert max_concurrent_trials(_needs(1, data_cpus=0), laptop, None) == 2
    assert max_concurrent_trials(_needs(2, data_cpus=0), laptop, None) == 1
    assert max_concurrent_trials(_needs(1), laptop, 3) == 3  # an explicit value wins (autoscaling clusters)


def test_gpu_trials_are_limited_by_the_cluster_gpus():
    cluster = {"CPU": 96.0, "GPU": 8.0}
    needs = _needs(2, device="auto", cluster=cluster)
    assert needs.gpus == 2 and needs.driver_request() == {"CPU": 1.0, "GPU": 0.0}
    assert max_concurrent_trials(needs, cluster, None) == 4


def test_a_trial_larger_than_the_cluster_is_a_clear_error():
    needs = TrialResources(workers=8, cpus_per_worker=1, gpus_per_worker=1, driver_cpus=1, driver_gpus=0, data_cpus=1)
    with pytest.raises(ConfigError, match=r"one trial needs .*8 GPU.*cluster has 64 CPU / 4 GPU"):
        max_concurrent_trials(needs, {"CPU": 64.0, "GPU": 4.0}, None)


def test_evaluation_prompts_come_from_the_list_and_a_manifest(tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('{"caption": "a sine tone at A4, 2.00 seconds", "seconds": 2.0}\n\n'
                        '{"prompt": "3 bursts of white noise", "seconds_total": 0.05}\nplain prompt line\n')
    ev = SweepEvaluationConfig(enabled=True, prompts=["drums"], prompts_file=str(manifest), seconds_total=[0.5])
    requests = evaluation_requests(ev, window_seconds=1.0)
    # Lengths stay as asked, even beyond the 1 s window (cutting 2.0 to 1.0 made a timing error of 0 certain).
    assert requests == [("drums", 0.5), ("a sine tone at A4, 2.00 seconds", 2.0), ("3 bursts of white noise", 0.05),
                        ("plain prompt line", 0.5)]
    ev.max_clips = 2
    assert len(evaluation_requests(ev, 1.0)) == 2


def _rows():
    return [
        TrialRow("t_00000", FINISHED, {"model.conditioning.text_encoder.kind": "embedded"},
                 {"fd_spectral": 3.0, "kl_synth_kind_ref_gen": 0.9, "loss": 0.5, "step": 20.0}),
        TrialRow("t_00001", FINISHED, {"model.conditioning.text_encoder.kind": "t5"},
                 {"fd_spectral": 2.0, "kl_synth_kind_ref_gen": 1.2, "loss": 0.4, "step": 20.0}),
        TrialRow("t_00002", FAILED, {"model.conditioning.text_encoder.kind": "clap"}, error="ValueError: no such folder"),
        TrialRow("t_00003", STOPPED, {"model.conditioning.text_encoder.kind": "clap_laion"}, {"loss": 0.9, "step": 5.0}),
    ]


def test_best_trial_follows_the_metric_and_mode_among_finished_trials():
    rows = _rows()
    assert best_trial(rows, "kl_synth_kind_ref_gen", "min").trial_id == "t_00000"
    assert best_trial(rows, "fd_spectral", "max").trial_id == "t_00000"
    assert best_trial(rows, "loss", "min").trial_id == "t_00001"  # the stopped trial does not compete
    assert best_trial(rows, "clap_score", "max") is None


def test_report_has_one_row_per_trial_in_markdown_csv_and_charts(tmp_path):
    files = write_report(_rows(), tmp_path, title="Sweep demo", metric="kl_synth_kind_ref_gen", mode="min")

    markdown = files["ablation.md"].read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| t_")]
    assert len(table) == 4
    header = next(line for line in markdown.splitlines() if line.startswith("| trial"))
    for column in ("text_encoder.kind", "FD (spectral)", "KL synth_kind (ref||gen)", "final loss", "status"):
        assert column in header
    assert "**0.9**" in table[0] and "failed" in table[2] and "no such folder" in markdown

    with files["ablation.csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["trial_id"] for r in rows] == ["t_00000", "t_00001", "t_00002", "t_00003"]
    assert rows[1]["model.conditioning.text_encoder.kind"] == "t5" and float(rows[1]["fd_spectral"]) == 2.0
    assert rows[2]["status"] == "failed" and rows[2]["fd_spectral"] == ""

    charts = [p for name, p in files.items() if name.endswith(".png")]
    assert {p.name for p in charts} >= {"kl_synth_kind_ref_gen.png", "fd_spectral.png", "loss.png"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in charts)


def test_cli_dry_run_lists_every_trial_without_ray(tmp_path, capsys):
    from sa_train.cli.main import main

    path = write_sweep(tmp_path, "search_space: {model.conditioning.timing.kind: {grid: [per_second, fourier, none]}}\n")
    assert main(["sweep", str(path), "training.steps=7", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 trials" in out and "training.steps=7" in out
    assert [line for line in out.splitlines() if line.strip().startswith("trial:")][-1].endswith("timing.kind=none")


def test_cli_reports_a_bad_sweep_file_as_a_config_error(tmp_path, capsys):
    from sa_train.cli.main import EXIT_CONFIG_ERROR, main

    path = write_sweep(tmp_path, "search_space: {training.seed: {grid: [0]}}\nmode: lowest\n")
    assert main(["sweep", str(path), "--dry-run"]) == EXIT_CONFIG_ERROR
    assert "mode='lowest'" in capsys.readouterr().err


def test_a_sweep_is_complete_only_when_every_expected_trial_ended():
    from sa_train.sweep.runner import SweepOutcome

    rows = _rows()  # finished, finished, failed, stopped early
    assert SweepOutcome("s", "/tmp/s", rows, expected_trials=4).complete
    # Tune creates trials lazily: after an interruption the missing ones are not even listed yet.
    assert not SweepOutcome("s", "/tmp/s", rows, expected_trials=6).complete
    unfinished = [*rows[:3], TrialRow("t_00003", "unfinished", {})]
    outcome = SweepOutcome("s", "/tmp/s", unfinished, expected_trials=4)
    assert not outcome.complete and "--resume" in outcome.summary()


def test_report_leaves_out_counts_and_shows_the_exception_of_a_failed_trial(tmp_path):
    from sa_train.sweep.report import _last_error_line, headline_metrics

    rows = [TrialRow("t", FINISHED, {}, {"fd_spectral": 1.0, "fd_num_frames": 9.0, "kl_num_matched": 2.0,
                                          "kl_passt_ref_gen": 0.5, "loss": 0.1})]
    assert headline_metrics(rows, "kl_passt_ref_gen") == ["fd_spectral", "kl_passt_ref_gen", "loss"]
    assert _last_error_line("Traceback ...\n  File x\nValueError: bad folder\n") == "ValueError: bad folder"
    assert _last_error_line("ray.train.WorkerGroupError: ...\n...(truncated)...\nolder /x missing\n") == "...older /x missing"


def test_asha_counts_training_steps_and_lets_a_full_trial_reach_its_evaluation(tmp_path):
    from ray.tune.schedulers import ASHAScheduler

    from sa_train.sweep.runner import _prepare, _scheduler

    spec = load_sweep(write_sweep(tmp_path, "search_space: {training.seed: {grid: [0, 1, 2]}}\n"
                                  "scheduler: {kind: asha, grace_period: 5, reduction_factor: 2}\n"), ["training.steps=40"])
    scheduler = _scheduler(spec, _prepare(spec).configs[0])
    assert isinstance(scheduler, ASHAScheduler)
    assert scheduler._time_attr == "step" and scheduler._metric == "loss" and scheduler._max_t == 41

    too_short = load_sweep(write_sweep(tmp_path, "search_space: {training.seed: {grid: [0, 1]}}\n"
                                       "scheduler: {kind: asha, grace_period: 50}\n"), ["training.steps=40"])
    with pytest.raises(ConfigError, match="grace_period=50 must be below scheduler.max_t=40"):
        _prepare(too_short)
    with pytest.raises(ConfigError, match="ASHA needs a metric reported during training"):
        load_sweep(write_sweep(tmp_path, "search_space: {training.seed: {grid: [0, 1]}}\nevaluation: {enabled: true, "
                               "prompts: [x]}\nscheduler: {kind: asha, metric: fd_spectral}\n"))
