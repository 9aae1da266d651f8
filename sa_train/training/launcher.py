"""The driver side of a training run: validated config -> Ray Train TorchTrainer -> export.

Starts a local Ray instance when there is no cluster (or joins RAY_ADDRESS / `ray job submit`),
refuses what cannot work (a resumed world size DeepSpeed cannot reshard; node-local storage or
MLflow store for a multi-node run), creates or continues the MLflow run (the one the resumed
checkpoint names), hands the datasets to the trainer, fits, and exports the final checkpoint into
``<storage>/<run>/exported``. The MLflow run ends FINISHED, FAILED or KILLED.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from sa_train.config import ConfigError, ExperimentConfig, to_flat_dict, to_yaml
from sa_train.training.deepspeed_config import micro_batch_size

if TYPE_CHECKING:
    from sa_train.training.checkpoint import TrainState

logger = logging.getLogger(__name__)


@dataclass
class TrainRunResult:
    run_name: str
    run_dir: str
    checkpoint: Optional[str]
    exported: Optional[str]
    mlflow_run_id: Optional[str]
    tracking_uri: Optional[str]
    metrics: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"run {self.run_name}: {self.run_dir}", f"  last checkpoint: {self.checkpoint}"]
        if self.exported:
            lines.append(f"  exported model: {self.exported}")
        if self.mlflow_run_id:
            lines.append(f"  MLflow run {self.mlflow_run_id} at {self.tracking_uri}")
        if self.metrics:
            lines.append("  final: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.metrics.items()))
        return "\n".join(lines)


def default_run_name(cfg: ExperimentConfig) -> str:
    return f"{cfg.training.stage}-{time.strftime('%Y%m%d-%H%M%S')}"


def storage_root(cfg: ExperimentConfig) -> str:
    path = cfg.storage.path
    return path if "://" in path else str(Path(path).resolve())


def use_gpu(cfg: ExperimentConfig) -> bool:
    if cfg.distributed.device != "auto":
        return cfg.distributed.device == "gpu"
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def build_train_dataset(cfg: ExperimentConfig, tally_name: str, board_name: Optional[str] = None):
    """The Ray Data dataset of training examples: latent shards, or audio decoded and cropped.

    ``board_name``: the run board whose data start (examples already seen, set by rank 0 on
    resume) the audio stream skips when a pass begins.
    """
    if cfg.training.stage == "diffusion" and cfg.data.latents:
        from sa_train.data.latents import build_latent_dataset
        from sa_train.export import load_exported

        from sa_train.data.latents import validate_shards

        identity = None
        if cfg.model.autoencoder.pretrained:
            identity = load_exported(cfg.model.autoencoder.pretrained, expect_stage="autoencoder").identity
        else:
            logger.warning("data.latents without model.autoencoder.pretrained: the shards' autoencoder is not checked "
                           "and audio samples cannot be decoded")
        _, meta = validate_shards(cfg.data.latents, identity)  # a mismatched autoencoder stops here
        # Enough epochs (passes over every file) that the stream outlasts the run, and no more: Ray
        # Data produces the stream ahead of training as fast as the CPUs allow.
        epochs = cfg.training.steps * cfg.training.global_batch_size // max(1, meta["total_examples"]) + 2
        return build_latent_dataset(cfg.data, identity, seed=cfg.training.seed, epochs=epochs, start_board=board_name)
    from sa_train.data.pipeline import build_audio_dataset, load_files

    # Records on the driver for folders and small manifests; for a large manifest only its block
    # references (rows read and checked in Ray tasks). A missing or empty source, a missing column
    # or a row the prompt template cannot fill fails here, before any worker starts.
    files = load_files(cfg.data)
    if not len(files):
        raise ValueError(f"data.sources={cfg.data.sources} holds no audio files; run `sa-train data check` on it")
    # One pass of the stream covers the whole run: each epoch of it draws new crops.
    examples = cfg.training.steps * cfg.training.global_batch_size
    epochs = examples // len(files) + 2
    from sa_train.data.bad_files import create_bad_file_tally

    # A named actor, so workers can read the counts as metrics and a restarted driver reuses it.
    tally = create_bad_file_tally(name=tally_name)
    return build_audio_dataset(cfg.data, seed=cfg.training.seed, epochs=epochs, records=files, tally=tally,
                               start_board=board_name)


def train_data_config(cfg: ExperimentConfig):
    """How Ray Train deals the training stream out to the ranks (its ``dataset_config``).

    Ray Train replaces a dataset's own execution options with these, so order is set here. With
    ``data.preserve_order`` (the default) blocks leave Ray Data in stream order and each goes to the
    rank that has received the fewest rows so far: every rank sees the same examples in the same
    order on every run, whichever decode task finishes first. Without it, blocks go out as they
    finish and prefer the rank on their node, so two runs of one config train on different batches.
    """
    import ray.train

    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = cfg.data.preserve_order
    # Ray Data ignores locality hints when it preserves order; asking for none says so.
    return ray.train.DataConfig(execution_options=options, enable_shard_locality=not cfg.data.preserve_order)


def worker_resources(cfg: ExperimentConfig, gpu: bool) -> dict[str, float]:
    dist = cfg.distributed
    return {"CPU": dist.cpus_per_worker, **({"GPU": dist.gpus_per_worker} if gpu else {})}


def cluster_nodes() -> tuple[dict[str, dict[str, float]], str]:
    """The total resources of each alive node of the Ray cluster (by node id), and this driver's node id."""
    import ray

    nodes = {node["NodeID"]: node["Resources"] for node in ray.nodes() if node.get("Alive")}
    return nodes, ray.get_runtime_context().get_node_id()


def check_resume_world_size(cfg: ExperimentConfig, run_dir: str, resumed: Optional[TrainState]) -> None:
    """Refuse, before any worker starts, to resume a run's checkpoint with another world size:
    DeepSpeed cannot reshard ZeRO optimizer state across world sizes."""
    wanted = cfg.distributed.num_workers
    if resumed is None or resumed.world_size == wanted:
        return
    raise ConfigError(
        f"run {cfg.tracking.run_name!r} resumes from its checkpoint {resumed.tag()} in {run_dir}, written by "
        f"{resumed.world_size} workers (ZeRO-{resumed.zero_stage}), but distributed.num_workers={wanted}. DeepSpeed "
        f"cannot reshard a ZeRO checkpoint to another world size: resume with distributed.num_workers="
        f"{resumed.world_size}, or start a new run (another tracking.run_name) from its weights "
        f"(sa-train export {run_dir} --out DIR)"
    )


def launch(
    cfg: ExperimentConfig,
    *,
    parent_run_id: Optional[str] = None,
    callbacks: Optional[list] = None,
    extra_tags: Optional[dict[str, str]] = None,
    export: bool = True,
    progress_label: Optional[str] = None,
) -> TrainRunResult:
    """Train as the config says; returns where everything went. Raises on failure after the retries.

    Everything that can refuse the run does so before the MLflow run is created or any worker
    starts. With ``progress_label``, the driver prints one progress line for the run (rate and
    ETA) under that label, for a person watching the terminal.
    """
    from sa_train.config.paths import absolute_local_paths
    from sa_train.distributed.nodes import check_shared_storage, multi_node_reason
    from sa_train.ray_session import ensure_ray
    from sa_train.training.checkpoint import latest_checkpoint_state

    absolute_local_paths(cfg, Path.cwd())  # workers run in a folder of their own
    dist = cfg.distributed
    run_name = cfg.tracking.run_name or default_run_name(cfg)
    cfg.tracking.run_name = run_name
    ensure_ray(min_cpus=dist.num_workers * dist.cpus_per_worker)
    gpu = use_gpu(cfg)
    micro_batch_size(cfg, dist.num_workers)  # the batch arithmetic is checked before any worker starts
    run_dir = f"{storage_root(cfg).rstrip('/')}/{run_name}"
    resumed = latest_checkpoint_state(run_dir)
    check_resume_world_size(cfg, run_dir, resumed)
    tracking_uri = None
    if cfg.tracking.enabled:
        from sa_train.tracking.mlflow_tracker import resolve_tracking_uri

        tracking_uri = cfg.tracking.uri = resolve_tracking_uri(cfg.tracking)
    nodes, driver_node = cluster_nodes()
    check_shared_storage(cfg, multi_node_reason(cfg, nodes, driver_node, worker_resources(cfg, gpu)), tracking_uri)

    if tracking_uri is None:
        return _train(cfg, run_dir, gpu, None, None, callbacks, export, progress_label)
    from sa_train.tracking.mlflow_tracker import closed_on_error, start_run
    from sa_train.tracking.train_callbacks import CheckpointLocationTag

    run_id = start_run(
        cfg.tracking, run_name, to_flat_dict(cfg),
        tags={"stage": cfg.training.stage, "world_size": str(dist.num_workers), "device": "gpu" if gpu else "cpu",
              **(extra_tags or {})},
        parent_run_id=parent_run_id,
        resume_run_id=resumed.mlflow_run_id if resumed else None,
    )
    callbacks = [*(callbacks or []), CheckpointLocationTag(tracking_uri, run_id, run_dir)]
    with closed_on_error(tracking_uri, run_id):
        result = _train(cfg, run_dir, gpu, tracking_uri, run_id, callbacks, export, progress_label)
    _finish_run(tracking_uri, run_id, "FINISHED", checkpoint=result.checkpoint)
    return result


def _train(cfg: ExperimentConfig, run_dir: str, gpu: bool, tracking_uri: Optional[str], run_id: Optional[str],
           callbacks: Optional[list], export: bool, progress_label: Optional[str]) -> TrainRunResult:
    """Datasets, trainer, fit, export: everything after the checks and the MLflow run's creation."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from sa_train.training.worker import train_loop_per_worker

    dist, run_name = cfg.distributed, cfg.tracking.run_name
    config_yaml = to_yaml(cfg)
    # The bad-file tally is a named actor that lives as long as this driver holds the dataset: one
    # per launch (a resubmitted run gets a fresh one), found by the workers through its name.
    from_latents = bool(cfg.data.latents) and cfg.training.stage == "diffusion"
    tally_name = f"sa_train.bad_files.{run_name}.{uuid.uuid4().hex[:8]}"
    board_name = f"sa_train.run.{run_name}.{uuid.uuid4().hex[:8]}"
    from sa_train.training.run_board import create_board

    board = create_board(board_name)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config_yaml": config_yaml, "use_gpu": gpu, "mlflow_run_id": run_id, "tracking_uri": tracking_uri,
            "bad_file_tally": None if from_latents else tally_name,
            "run_board": board_name,
        },
        scaling_config=ray.train.ScalingConfig(num_workers=dist.num_workers, use_gpu=gpu,
                                               resources_per_worker=worker_resources(cfg, gpu)),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage_root(cfg),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.training.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=dist.max_failures),
            callbacks=callbacks,
        ),
        datasets={"train": build_train_dataset(cfg, tally_name, board_name)},
        dataset_config=train_data_config(cfg),
    )
    logger.info("training %s: %d %s workers, run folder %s", run_name, dist.num_workers, "GPU" if gpu else "CPU", run_dir)
    try:
        if progress_label:
            from sa_train.training.console import ProgressPrinter

            with ProgressPrinter(board, progress_label):
                result = trainer.fit()
        else:
            result = trainer.fit()
        stop = ray.get(board.stop_reason.remote())
        if stop:
            from sa_train.training.worker import NonFiniteLossError

            raise NonFiniteLossError(stop)
    finally:
        ray.kill(board)

    checkpoint = None
    exported = None
    if result.checkpoint is not None:
        from sa_train.tracking.train_callbacks import checkpoint_location

        checkpoint = checkpoint_location(run_dir, result.checkpoint.path)
        if export:
            exported = _export_and_log(result.checkpoint, run_dir, tracking_uri, run_id)
    return TrainRunResult(run_name, run_dir, checkpoint, exported, run_id, tracking_uri, dict(result.metrics or {}))


def _export_and_log(checkpoint, run_dir: str, tracking_uri: Optional[str], run_id: Optional[str]) -> str:
    """Export the final checkpoint into <run_dir>/exported (uploaded when the storage is remote)."""
    import tempfile

    from sa_train.export import export_checkpoint, upload_folder

    destination = f"{run_dir.rstrip('/')}/exported"
    remote = "://" in run_dir
    with checkpoint.as_directory() as directory, tempfile.TemporaryDirectory(prefix="sa_train_export_") as tmp:
        local = Path(tmp) / "exported" if remote else Path(destination)
        export_checkpoint(directory, local)
        if remote:
            upload_folder(local, destination)
        if run_id:  # the export's files, and for a diffusion model one that mlflow.pyfunc loads (never raises)
            from sa_train.tracking.mlflow_model import log_training_export

            log_training_export(local, tracking_uri, run_id)
    return destination


def _finish_run(tracking_uri: str, run_id: str, status: str, checkpoint: Optional[str] = None) -> None:
    from sa_train.tracking.mlflow_tracker import CHECKPOINT_TAG, RunTracker

    tracker = RunTracker(tracking_uri, run_id)
    if checkpoint:
        tracker.set_tags({CHECKPOINT_TAG: checkpoint})
    tracker.finish(status)
