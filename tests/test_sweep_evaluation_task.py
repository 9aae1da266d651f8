"""A trial's evaluation runs as its own Ray task with the resources the sweep asks for (a GPU when
the trials train on GPUs), after training returned, reading the trial's export from storage; the
trial still reports the evaluation's metrics to Tune.

The trial here is a real Tune trial on the local Ray instance whose launch is replaced by one that
returns a finished run with a tiny randomly initialised export (training itself is tested in
tests/integration); generation and scoring are the real ones.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "tracking"))  # tiny_exports (importlib mode)

from tiny_exports import tiny_exports, write_manifest  # noqa: E402

from sa_train.sweep.config import SweepEvaluationConfig  # noqa: E402
from sa_train.sweep.evaluation_task import TASK_FILE, task_options  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_the_task_asks_for_gpus_only_when_the_trials_train_on_gpus():
    ev = SweepEvaluationConfig(enabled=True, cpus=4, gpus=1)
    on_gpu, on_cpu = task_options(ev, gpu=True), task_options(ev, gpu=False)
    assert (on_gpu["num_cpus"], on_gpu["num_gpus"]) == (4, 1)
    assert (on_cpu["num_cpus"], on_cpu["num_gpus"]) == (4, 0)
    # Not captured by the trial's placement group, which Tune sized for the driver alone.
    assert on_gpu["scheduling_strategy"] == "DEFAULT" and on_gpu["max_retries"] == 0


def finished_run(exported: str, run_dir: str, pid_file: str, cfg, **kwargs):
    """Stands in for launch(): notes the trial driver's process, returns a finished run."""
    from sa_train.training.launcher import TrainRunResult

    Path(pid_file).write_text(str(os.getpid()))
    return TrainRunResult(cfg.tracking.run_name, run_dir, None, exported, None, None, {"step": 2, "loss": 0.5})


def test_trial_evaluates_in_its_own_task_and_reports_the_metrics(ray_session, tmp_path):
    from ray import tune

    from sa_train.sweep.trial import FINISHED_KEY, TrialContext, make_trainable

    manifest = write_manifest(tmp_path / "data" / "manifest.jsonl")
    _, exported = tiny_exports(tmp_path / "storage", manifest)
    run_dir = tmp_path / "storage" / "runs" / "trial"
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text("training: {stage: autoencoder}\ndistributed: {device: cpu}\n")
    ev = SweepEvaluationConfig(enabled=True, prompts=["a sine tone", "noise"], seconds_total=[0.25], tagger=None,
                               sampler_steps=2, cpus=2)
    context = TrialContext(sweep_name="evaltask", experiment=str(experiment), overrides=[], dimensions=[],
                           parent_run_id=None, tracking_uri=None, evaluation=ev, workdir=str(tmp_path))
    pid_file = tmp_path / "driver.pid"
    launch = functools.partial(finished_run, str(exported), str(run_dir), str(pid_file))
    trainable = tune.with_resources(make_trainable(context, launch), tune.PlacementGroupFactory([{"CPU": 1}]))
    tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(num_samples=1),
                       run_config=tune.RunConfig(name="evaltask", storage_path=str(tmp_path / "tune")))
    (result,) = list(tuner.fit())
    assert result.error is None, result.error

    # The trial reported what the evaluation measured, with the training figures.
    report = run_dir / "evaluation"
    timing = {k: v for k, v in result.metrics.items() if k.startswith("timing_")}
    assert timing, sorted(result.metrics)
    assert result.metrics[FINISHED_KEY] == 1 and result.metrics["step"] == 2
    assert len(list((report / "generated").glob("*.wav"))) == 2

    # It ran in a task of its own (another process than the trial's driver) holding what was asked.
    task = json.loads((report / TASK_FILE).read_text())
    assert task["pid"] != int(pid_file.read_text())
    assert task["assigned_resources"] == {"CPU": 2.0}
