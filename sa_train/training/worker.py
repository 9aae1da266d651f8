"""The function every Ray Train worker runs: build the task, resume, train, checkpoint, report.

Reads in the order it runs. Every rank calls ``ray.train.report`` at the same steps (it is a
barrier), with its own DeepSpeed shard; Ray merges the ranks' folders into one checkpoint.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import ray.train
import torch
from safetensors.torch import save_file

from sa_train.config import ExperimentConfig, from_yaml
from sa_train.data.batch import AudioBatch
from sa_train.training.checkpoint import (
    EMA_FILE,
    TrainState,
    load_rng,
    load_streams,
    read_state,
    save_rng,
    write_state,
)
from sa_train.training.run_board import find_board
from sa_train.training.deepspeed_config import micro_batch_size
from sa_train.training.progress import IntervalMeans, ProgressMeter

logger = logging.getLogger("sa_train.worker")

POST_INTERVAL_S = 1.0  # progress posts to the driver's board, at most one a second
MODEL_FILE = "model.safetensors"


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps with a non-finite loss: the run stops with its last good checkpoint."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_task(cfg: ExperimentConfig, device: torch.device, rank: int, world_size: int, on_gpu: bool):
    from sa_train.training.tasks import AutoencoderTask, DiffusionTask

    if cfg.training.stage == "autoencoder":
        return AutoencoderTask(cfg, device, rank, world_size, on_gpu)
    autoencoder = None
    if cfg.model.autoencoder.kind == "vae" and cfg.data.latents is None:
        from sa_train.export import load_exported

        autoencoder = load_exported(cfg.model.autoencoder.pretrained, expect_stage="autoencoder").model
    return DiffusionTask(cfg, device, rank, world_size, on_gpu, autoencoder=autoencoder)


def save_checkpoint(task, state: TrainState, config_yaml: str, rank: int, metrics: dict[str, Any]) -> None:
    """Every rank writes its part to a local folder and reports it (Ray merges the folders)."""
    with tempfile.TemporaryDirectory(prefix="sa_train_ckpt_") as tmp:
        write_checkpoint(task, state, config_yaml, rank, Path(tmp))
        ray.train.report(
            metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=state.tag()
        )


def write_checkpoint(task, state: TrainState, config_yaml: str, rank: int, directory: Path) -> None:
    """Every rank: its DeepSpeed shard and RNG states. Rank 0 also: the state, the config, and the
    full fp32 weights and EMA, gathered to rank 0 alone (the other ranks send their partitions and
    build no full tensor). Collective: every rank calls it."""
    weights = task.exported_weights()  # the full weights on rank 0, None elsewhere
    ema = task.ema_weights()  # likewise
    for name, engine in task.engines.items():
        engine.save_checkpoint(str(directory / name), tag=state.tag())
    save_rng(directory, rank, extra=task.extra_state(), streams=task.stream_state())
    if rank == 0:
        save_file({k: v.contiguous() for k, v in weights.items()}, str(directory / MODEL_FILE))
        write_state(directory, state, config_yaml, ema)  # state.json last


def restore_checkpoint(task, checkpoint: "ray.train.Checkpoint", rank: int, world_size: int) -> TrainState:
    with checkpoint.as_directory() as tmp:
        directory = Path(tmp)
        state = read_state(directory)
        if state.world_size != world_size:  # the driver refuses this before launch; a restart must too
            raise ValueError(
                f"checkpoint {state.tag()} was written by {state.world_size} workers and this run has {world_size}; "
                "DeepSpeed cannot reshard its ZeRO state. Resume with distributed.num_workers="
                f"{state.world_size}, or start a new run from its exported weights"
            )
        for name, engine in task.engines.items():
            path, _ = engine.load_checkpoint(str(directory / name), tag=state.tag())
            if path is None:
                raise RuntimeError(f"DeepSpeed could not load {name} from {directory}")
        extra = load_rng(directory, rank)
        task.load_extra_state(extra)
        task.load_stream_state(load_streams(directory, rank))
        if (directory / EMA_FILE).exists():
            task.load_ema(directory / EMA_FILE)  # each rank reads only what its partition needs
    logger.info("rank %d resumed from step %d (samples seen %d)", rank, state.step, state.samples_seen)
    return state


def resume_data_stream(board, state: TrainState, rank: int) -> None:
    """Rank 0 tells the data pipeline to skip the examples already seen; every rank waits for it,
    so no rank starts the stream before the pipeline knows where to begin."""
    if rank == 0 and board is not None:
        ray.get(board.set_data_start.remote(state.samples_seen))
        logger.info("the data stream continues after the %d examples already seen", state.samples_seen)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    cfg = from_yaml(loop_config["config_yaml"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    on_gpu = bool(loop_config["use_gpu"]) and torch.cuda.is_available()
    device = ray.train.torch.get_device() if on_gpu else torch.device("cpu")
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    seed_everything(cfg.training.seed * 1000 + rank)
    board = find_board(loop_config.get("run_board"))

    # 1. Models, engines, EMA, and this rank's own random streams (identical weights on every rank).
    task = build_task(cfg, device, rank, world_size, on_gpu)
    zero_stage = next(iter(task.engines.values())).zero_optimization_stage()
    state = TrainState(
        world_size=world_size, zero_stage=zero_stage, stage=cfg.training.stage,
        engines=list(task.engines), mlflow_run_id=loop_config.get("mlflow_run_id"),
    )

    # 2. Resume from the last reported checkpoint, if the run (or this worker group) restarted:
    # weights, optimizer, EMA, random streams, and the position in the data stream.
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        state = restore_checkpoint(task, checkpoint, rank, world_size)
        state.resumed_at.append(state.step)
        state.zero_stage = zero_stage
        # The driver continued the checkpoint's MLflow run (or, when the store lost it, started a new one).
        state.mlflow_run_id = loop_config.get("mlflow_run_id") or state.mlflow_run_id
        resume_data_stream(board, state, rank)

    # 3. Rank 0 tracks (a tracking failure is logged and counted, never raised); everyone trains.
    tracker = None
    if rank == 0 and loop_config.get("mlflow_run_id"):
        from sa_train.tracking.fail_safe import FailSafeTracker

        tracker = FailSafeTracker(loop_config["tracking_uri"], loop_config["mlflow_run_id"])
    sampling = bool(loop_config.get("mlflow_run_id"))  # the same on every rank: sampling may be collective
    micro = micro_batch_size(cfg, world_size)
    steps, global_batch = cfg.training.steps, cfg.training.global_batch_size
    seconds_per_example = cfg.data.window_samples / cfg.data.sample_rate
    meter = ProgressMeter(total_steps=steps, start_step=state.step)
    interval = IntervalMeans()  # metrics are logged as means over the steps since the last log
    last_post = -float("inf")
    if rank == 0:
        logger.info(
            "stage %s: %d workers x micro-batch %d x accumulation %d = global batch %d; steps %d -> %d; ZeRO-%d",
            cfg.training.stage, world_size, micro, cfg.training.grad_accum_steps, global_batch,
            state.step, steps, state.zero_stage,
        )
    if tracker is not None and state.step == 0:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "config.yaml").write_text(loop_config["config_yaml"])
            tracker.log_artifact(Path(tmp) / "config.yaml")

    # 4. The loop: one pass of the data stream after another until the last step.
    shard = ray.train.get_dataset_shard("train")
    consecutive_nonfinite = 0
    while state.step < steps:
        batches_this_pass = 0
        for batch_dict in shard.iter_batches(
            batch_size=micro, batch_format="numpy", drop_last=True, prefetch_batches=cfg.data.prefetch_batches
        ):
            batches_this_pass += 1
            result = task.micro_step(AudioBatch.from_numpy_dict(batch_dict))

            # 4a. Non-finite losses (agreed across ranks): skip, count, stop after too many in a row.
            if result.skipped:
                consecutive_nonfinite += 1
                state.nonfinite_total += 1
                logger.warning("rank %d: non-finite loss at step %d, skipped (%d in a row)", rank, state.step + 1, consecutive_nonfinite)
                if consecutive_nonfinite >= cfg.training.max_nonfinite_steps:
                    stop_for_nonfinite(board, rank, consecutive_nonfinite, state.step + 1)
                    return
                continue
            consecutive_nonfinite = 0
            if not result.boundary:
                continue

            # 4b. An optimizer step was taken: EMA, progress, metrics.
            state.step += 1
            state.samples_seen += global_batch
            task.update_ema(state.step)
            rates = meter.update(state.step, global_batch, seconds_per_example)
            interval.add(result.metrics)
            if board is not None and rank == 0 and (time.monotonic() - last_post >= POST_INTERVAL_S or state.step == steps):
                last_post = time.monotonic()  # at most one actor call a second: each costs the loop
                board.post.remote({"step": state.step, "total": steps, "loss": result.metrics["loss"],
                                   "step_time": meter.step_time, "eta": meter.eta_seconds(state.step)})
            if state.step % cfg.training.log_every == 0 or state.step == steps:
                step_metrics = {**interval.take(), "lr": result.metrics["lr"]}  # lr: this step's, not a mean
                log_metrics(tracker, state, step_metrics, rates, rank, meter, loop_config)

            # 4c. Checkpoint, then samples: a failed sampling never costs the checkpoint.
            if state.step % cfg.training.checkpoint_every == 0 or state.step == steps:
                report = {"step": state.step, "loss": result.metrics["loss"], "samples_seen": state.samples_seen}
                save_checkpoint(task, state, loop_config["config_yaml"], rank, report)
            sample_every = cfg.training.sample_every
            if sampling and ((sample_every and state.step % sample_every == 0) or state.step == steps):
                weights = task.sampling_weights()  # collective: full weights on rank 0 only
                if tracker is not None:
                    log_samples(task, weights, tracker, state.step)
            if state.step >= steps:
                break
        if batches_this_pass == 0:
            raise ValueError(
                f"a pass over the training data gave this worker no full micro-batch of {micro} examples: the dataset "
                f"has fewer examples than {world_size} workers x {micro}. Add data, or lower "
                "training.global_batch_size (or distributed.num_workers)"
            )
        state.epoch += 1
    if tracker is not None:
        tracker.log_loss_curves(cfg.training.stage)


def stop_for_nonfinite(board, rank: int, count: int, step: int) -> None:
    """Every rank returns (the count is agreed across ranks); rank 0 posts the reason, and the driver
    raises :class:`NonFiniteLossError`, so Ray's failure policy does not retry a run that would
    diverge again from the same checkpoint."""
    message = (
        f"{count} consecutive micro-steps had a non-finite loss at step {step}; stopped with the last good "
        f"checkpoint intact. Lower training.optimizer.lr, check the data (sa-train data check), or raise "
        f"training.max_nonfinite_steps"
    )
    logger.error("rank %d: %s", rank, message)
    if rank == 0 and board is not None:
        ray.get(board.post_stop.remote(message))
    if board is None:  # no driver to tell: fail here
        raise NonFiniteLossError(message)


def log_metrics(tracker, state: TrainState, step_metrics: dict, rates: dict, rank: int, meter: ProgressMeter,
                loop_config: dict) -> None:
    """Rank 0: the interval's mean metrics (each step's already averaged over ranks by the task) to the log
    and MLflow."""
    if rank != 0:
        return
    metrics = {f"train/{k}": v for k, v in step_metrics.items()}
    metrics.update(rates, **{"train/nonfinite_skipped": float(state.nonfinite_total)})
    metrics.update(memory_metrics())
    metrics.update(bad_file_metrics(loop_config.get("bad_file_tally")))
    logger.info(meter.line(state.step, step_metrics["loss"]))
    if tracker is not None:
        try:
            tracker.log_metrics(metrics, state.step)
        except Exception:  # noqa: BLE001 - a tracking outage must not stop training
            logger.exception("logging metrics of step %d to MLflow failed; training goes on", state.step)


def log_samples(task, weights, tracker, step: int) -> None:
    """Rank 0: audio samples as WAV + spectrogram PNG under samples/step_<N>/ in MLflow. A failure
    is logged and training goes on (the checkpoint of this step is already saved)."""
    from sa_train.tracking.media import write_spectrogram_png, write_wav

    started = time.perf_counter()
    try:
        clips = task.sample_audio(weights)
        if not clips:
            return
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / f"step_{step:08d}"
            for name, audio, sample_rate in clips:
                write_wav(audio, sample_rate, folder / f"{name}.wav")
                write_spectrogram_png(audio, sample_rate, folder / f"{name}.png", title=f"{name} (step {step})")
            tracker.log_artifact(folder, f"samples/step_{step:08d}")
    except Exception:  # noqa: BLE001 - samples are for people; the run must not die for them
        logger.exception("audio samples at step %d failed; training goes on", step)
        tracker.count_sampling_failure()
        return
    logger.info("logged %d audio samples at step %d in %.1f s", len(clips), step, time.perf_counter() - started)


def bad_file_metrics(tally_name: Optional[str]) -> dict[str, float]:
    """Bad-file counts of the data pipeline (data/bad_fraction, data/bad/<reason>), from its tally actor."""
    if not tally_name:
        return {}
    import ray

    try:
        tally = ray.get_actor(tally_name)
    except ValueError:
        return {}
    return {k: float(v) for k, v in ray.get(tally.snapshot.remote()).metrics().items()}


def memory_metrics() -> dict[str, float]:
    import psutil

    metrics = {"system/cpu_rss_gb": psutil.Process().memory_info().rss / 2**30}
    if torch.cuda.is_available():
        metrics["system/gpu_max_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return metrics
