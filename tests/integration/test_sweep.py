"""The tiny text-encoder sweep on a local Ray instance: real Ray Tune trials, each a Ray Train run.

Four trials (the embedded encoder, a tiny saved CLAP, a tiny saved T5, and a CLAP folder that does
not exist). The sweep is interrupted (SIGINT, as Ctrl+C) once the first trial finished, then
resumed: the finished trial is not launched again, the failed one is recorded, the others finish,
and the parent MLflow run holds one child per trial and the report.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import signal
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from sa_train.sweep.config import load_sweep
from sa_train.sweep.report import FAILED, FINISHED
from sa_train.sweep.runner import report_sweep, run_sweep
from sa_train.sweep.tiny_encoders import write_tiny_text_encoders
from sa_train.sweep.tracking import TRIAL_TAG, child_runs
from sa_train.training.checkpoint import find_latest_checkpoint, read_state

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "sweeps" / "tiny_text_encoder_ablation.yaml"
# On top of the shipped tiny sweep's overrides: as few steps and sampler steps as still exercise everything.
FAST = [
    "training.steps=2", "training.checkpoint_every=2", "training.global_batch_size=2", "training.log_every=1",
    "training.sample_prompts=[a sine tone at A4]", "training.sample_seconds=[1.0]", "model.sampling.steps=2",
    "model.conditioning.text_encoder.max_length=16", "distributed.device=cpu", "distributed.max_failures=0",
]


def recording_launch(log_path: str, cfg, **kwargs):
    """The real launch, after noting which run it was called for (runs in the trial's actor)."""
    from sa_train.training.launcher import launch

    with open(log_path, "a") as handle:
        handle.write(json.dumps({"run_name": cfg.tracking.run_name, "pid": os.getpid()}) + "\n")
    return launch(cfg, **kwargs)


def launches(log_path: Path) -> list[str]:
    return [json.loads(line)["run_name"] for line in log_path.read_text().splitlines()] if log_path.exists() else []


def _interrupt_once(marker: str) -> None:
    if not os.path.exists(marker):
        Path(marker).write_text("interrupted")
        os.kill(os.getpid(), signal.SIGINT)  # Tune's handler: stop, save the experiment state, return


def interrupt_after_first_completion(marker: str):
    """A Tune callback that interrupts the sweep's driver once, when the first trial completes. It is
    pickled with the Tuner, so it is back on resume: the marker file keeps it from firing again."""
    from ray import tune

    class InterruptAfterFirstCompletion(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            _interrupt_once(marker)

    return InterruptAfterFirstCompletion()


@pytest.fixture
def tiny_sweep(tmp_path, synth_manifest):
    """The shipped tiny sweep, pointed at this test's data, encoders, storage and MLflow store."""
    encoders = write_tiny_text_encoders(tmp_path / "encoders")
    shipped = yaml.safe_load(SHIPPED.read_text())
    captions = [json.loads(line)["caption"] for line in synth_manifest.read_text().splitlines()[:2]]
    sweep = {
        **shipped,
        "name": "tiny_te",
        "experiment": str((SHIPPED.parent / shipped["experiment"]).resolve()),
        "overrides": [*shipped["overrides"], *FAST, f"data.sources=[{synth_manifest}]",
                      f"storage.path={tmp_path / 'runs'}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"],
        "search_space": {"model.conditioning.text_encoder": {"grid": [
            {"kind": "embedded"},
            {"kind": "clap", "name_or_path": encoders["clap"]},
            {"kind": "t5", "name_or_path": encoders["t5"]},
            {"kind": "clap", "name_or_path": str(tmp_path / "no_such_clap"), "local_files_only": True},
        ]}},
        "metric": "fd_spectral",
        "evaluation": {"enabled": True, "prompts": captions, "seconds_total": [1.0], "reference": str(synth_manifest.parent),
                       "embedder": "spectral", "tagger": "synth_kind", "sampler_steps": 2},
    }
    path = tmp_path / "tiny_te.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return load_sweep(path)


def checkpoint_step(run_dir: str) -> int:
    return read_state(find_latest_checkpoint(Path(run_dir))).step


def test_tiny_text_encoder_sweep_survives_interruption_records_failure_and_reports(ray_local, tiny_sweep, tmp_path):
    log = tmp_path / "launches.jsonl"
    launch = functools.partial(recording_launch, str(log))

    first = run_sweep(tiny_sweep, launch=launch, callbacks=[interrupt_after_first_completion(str(tmp_path / "marker"))])
    assert not first.complete, "the sweep was interrupted after its first trial"
    done_before = {r.trial_id: r for r in first.rows if r.status == FINISHED}
    assert done_before, "the first trial finished before the interruption"
    steps_before = {tid: checkpoint_step(r.info["run_dir"]) for tid, r in done_before.items()}
    uri, parent = first.tracking_uri, first.parent_run_id
    client = MlflowClient(uri)
    assert client.get_run(parent).info.status == "KILLED"

    second = run_sweep(tiny_sweep, resume=True, launch=launch)

    # Every trial ended: three encoders trained and were evaluated; the missing folder failed alone.
    assert second.complete and len(second.rows) == 4
    by_path = {r.values.get("model.conditioning.text_encoder.name_or_path"): r for r in second.rows}
    failed = by_path[str(tmp_path / "no_such_clap")]
    assert failed.status == FAILED and "no_such_clap" in failed.error
    finished = [r for r in second.rows if r.status == FINISHED]
    assert sorted(r.values["model.conditioning.text_encoder.kind"] for r in finished) == ["clap", "embedded", "t5"]
    for row in finished:
        assert row.metrics["step"] == 2 and "fd_spectral" in row.metrics and "timing_mae_s" in row.metrics
        assert "timing_num_unmeasurable" not in row.metrics  # the shipped window leaves room after 1 s

    # Resume ran nothing twice: the trials finished before were not launched again and kept their checkpoints.
    calls = launches(log)
    for trial_id, row in done_before.items():
        assert calls.count(row.info["run_name"]) == 1
        assert checkpoint_step(row.info["run_dir"]) == steps_before[trial_id]
    assert {r.info["run_name"] for r in finished} <= set(calls)

    # MLflow: one parent for the sweep, one child per trial with its searched values as params. A trial
    # interrupted before its first checkpoint started over in a new child run; its first one is closed.
    all_children = child_runs(uri, parent)  # newest first
    assert all(c.info.status != "RUNNING" for c in all_children)
    newest_per_trial: dict = {}
    for child in all_children:
        newest_per_trial.setdefault(child.data.tags[TRIAL_TAG], child)
    children = list(newest_per_trial.values())
    assert len(children) == 4
    assert {c.data.params["sweep.model.conditioning.text_encoder.kind"] for c in children} == {"embedded", "clap", "t5"}
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED", "FINISHED", "FINISHED"]
    evaluated = [c for c in children if c.info.status == "FINISHED"]
    assert all("eval/fd_spectral" in c.data.metrics for c in evaluated)
    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED" and parent_run.data.tags["sa_train.sweep"] == "tiny_te"
    assert parent_run.data.metrics["trials_finished"] == 3 and parent_run.data.metrics["trials_failed"] == 1
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/ablation.md", "report/ablation.csv", "report/fd_spectral.png"} <= logged

    # The report: one row per trial in the Markdown and CSV tables, and a bar chart of the metric.
    markdown = Path(second.report_files["ablation.md"]).read_text()
    assert len([line for line in markdown.splitlines() if line.startswith("| ") and "trial" not in line]) == 4
    with open(second.report_files["ablation.csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and sorted(r["status"] for r in rows) == ["failed", "finished", "finished", "finished"]
    assert Path(second.report_files["fd_spectral.png"]).read_bytes()[:4] == b"\x89PNG"

    # --report-only rebuilds the same table from Tune's saved state and runs nothing.
    again = report_sweep(tiny_sweep)
    assert [(r.trial_id, r.status) for r in again.rows] == [(r.trial_id, r.status) for r in second.rows]
    assert launches(log) == calls
