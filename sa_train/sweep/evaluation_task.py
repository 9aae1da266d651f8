"""A trial's evaluation as a Ray task of its own, after its training has released its workers.

At paper scale a trial's driver holds one CPU on some node; generating 95 s clips with 100 sampler
steps and scoring them with OpenL3, PaSST and CLAP there would take hours. So the trial's driver
hands the evaluation to a task that asks for ``evaluation.gpus`` GPUs when the trials train on GPUs
(``evaluation.cpus`` CPUs otherwise), which Ray places wherever those are free: the GPUs the
trial's Ray Train workers have just given back, since fit() returns only after the workers ended.

Its inputs are on shared storage, not in the driver's memory: the trial's export under
``storage.path`` (<run>/exported, local on one node or NFS, or s3:// / gs://), the prompts file and
reference named in the sweep. Its outputs go there as well: <run>/evaluation (uploaded when the
run folder is remote) and the trial's MLflow run. The task records where it ran, with the
resources Ray assigned to it, in <run>/evaluation/evaluation_task.json.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from sa_train.sweep.config import SweepEvaluationConfig

logger = logging.getLogger(__name__)

TASK_FILE = "evaluation_task.json"
EVALUATION_DIR = "evaluation"


@dataclass
class EvaluationTask:
    """What the evaluation task needs: locations and settings only (a few hundred bytes)."""

    run_name: str
    exported: str  # the trial's export: <run_dir>/exported
    run_dir: str
    evaluation: SweepEvaluationConfig
    step: int
    workdir: str  # relative paths of the sweep (prompts_file, reference) mean this folder
    cache_dir: Optional[str] = None
    tracking_uri: Optional[str] = None
    mlflow_run_id: Optional[str] = None


def task_options(ev: SweepEvaluationConfig, gpu: bool) -> dict[str, Any]:
    """Ray options of the evaluation task. "DEFAULT" scheduling keeps it out of the trial's placement
    group, which Tune sizes for the driver alone (child tasks would otherwise be captured in it)."""
    return {"num_cpus": ev.cpus, "num_gpus": ev.gpus if gpu else 0, "max_retries": 0,
            "scheduling_strategy": "DEFAULT", "name": "sa_train.sweep.evaluate"}


def run_evaluation_task(task: EvaluationTask, gpu: bool) -> dict[str, float]:
    """Run the evaluation in its own task and wait for its metrics (raises what the task raised)."""
    import ray

    options = task_options(task.evaluation, gpu)
    logger.info("trial %s: evaluation task with %g CPU / %g GPU", task.run_name, options["num_cpus"],
                options["num_gpus"])
    remote = ray.remote(_evaluate_in_task).options(**options)
    return ray.get(remote.remote(task))


def _evaluate_in_task(task: EvaluationTask) -> dict[str, float]:
    import ray

    from sa_train.sweep.evaluation import evaluate_trial

    if os.path.isdir(task.workdir):
        os.chdir(task.workdir)
    remote = "://" in task.run_dir
    with tempfile.TemporaryDirectory(prefix="sa_train_eval_") as tmp:
        out_dir = Path(tmp) if remote else Path(task.run_dir) / EVALUATION_DIR
        out_dir.mkdir(parents=True, exist_ok=True)
        context = ray.get_runtime_context()
        (out_dir / TASK_FILE).write_text(json.dumps({
            "pid": os.getpid(), "node_id": context.get_node_id(), "task_id": context.get_task_id(),
            "assigned_resources": context.get_assigned_resources(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }, indent=2))
        metrics = evaluate_trial(task.exported, task.evaluation, out_dir, task.cache_dir)
        if task.tracking_uri and task.mlflow_run_id:
            from sa_train.sweep.tracking import log_evaluation

            log_evaluation(task.tracking_uri, task.mlflow_run_id, metrics, int(task.step or 0), out_dir)
        if remote:
            from sa_train.export import upload_folder

            upload_folder(out_dir, f"{task.run_dir.rstrip('/')}/{EVALUATION_DIR}")
    return metrics
