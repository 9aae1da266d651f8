"""The plan of a training run: parameters, FLOPs, memory per GPU and time, as a table or a dict.

    plan = make_plan(cfg, gpu="a100", utilization=0.4)
    table, as_json = format_plan(plan), json.dumps(plan.to_dict())
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from sa_train.config.schema import ExperimentConfig
from sa_train.planning import estimate
from sa_train.planning.compute import StepCompute, autoencoder_step, diffusion_step
from sa_train.planning.estimate import CheckpointSize, TimeEstimate, ZeroMemory
from sa_train.planning.parameters import FROZEN, TRAINED, Component, components

GIB = 2**30


@dataclass
class Plan:
    """Everything `sa-train plan` reports for one resolved config."""

    config: str
    stage: str
    input_kind: str
    precision: str
    global_batch: int
    workers: int
    grad_accum_steps: int
    micro_batch: int
    steps: int
    zero_stage: int
    components: list[Component]
    compute: StepCompute
    frozen_bytes: float
    memory: list[ZeroMemory]
    time: TimeEstimate
    checkpoint: CheckpointSize
    keep_checkpoints: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def trained_parameters(self) -> int:
        return sum(c.parameters or 0 for c in self.components if c.role == TRAINED)

    @property
    def micro_steps_per_step(self) -> int:
        """Micro-batches in one optimizer step over the whole cluster."""
        return self.grad_accum_steps * self.workers

    @property
    def flops_per_step(self) -> int:
        return self.compute.total_flops * self.micro_steps_per_step

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (counts in parameters, FLOPs, bytes and seconds)."""
        c, t = self.compute, self.time
        p_bytes, g_bytes, o_bytes = estimate.bytes_per_parameter(self.precision)
        return {
            "config": self.config,
            "stage": self.stage,
            "input": self.input_kind,
            "precision": self.precision,
            "batch": {
                "global": self.global_batch,
                "workers": self.workers,
                "grad_accum_steps": self.grad_accum_steps,
                "micro_batch": self.micro_batch,
            },
            "shapes": {"input": list(c.input_shape), "context": list(c.context_shape) if c.context_shape else None},
            "parameters": {
                comp.name: {"count": comp.parameters, "role": comp.role, "note": comp.note} for comp in self.components
            },
            "trained_parameters": self.trained_parameters,
            "flops": {
                "forward_per_micro_batch": c.train_forward_flops,
                "backward_per_micro_batch": c.train_backward_flops,
                "encode_per_micro_batch": c.encode_flops,
                "per_micro_batch": c.total_flops,
                "per_step": self.flops_per_step,
                "total": self.flops_per_step * self.steps,
                "method": "torch.utils.flop_counter.FlopCounterMode on meta tensors (matmul, conv, attention)",
            },
            "memory": {
                "bytes_per_parameter": {"parameters": p_bytes, "gradients": g_bytes, "optimizer": o_bytes},
                "activations_bytes": c.activation_bytes,
                "activations_method": c.activation_method,
                "frozen_bytes": self.frozen_bytes,
                "configured_zero_stage": self.zero_stage,
                "zero_stages": [
                    {
                        "stage": m.stage,
                        "parameters_bytes": m.parameters_bytes,
                        "gradients_bytes": m.gradients_bytes,
                        "optimizer_bytes": m.optimizer_bytes,
                        "state_bytes": m.state_bytes,
                        "activations_bytes": m.activations_bytes,
                        "frozen_bytes": m.frozen_bytes,
                        "ema_bytes": m.ema_bytes,
                        "total_bytes": m.total_bytes,
                        "offloaded": m.offloaded,
                    }
                    for m in self.memory
                ],
            },
            "time": {
                "gpu": t.gpu,
                "peak_tflops": t.peak_tflops,
                "utilization": t.utilization,
                "gpus": t.gpus,
                "steps": t.steps,
                "seconds_per_step": t.seconds_per_step,
                "total_seconds": t.total_seconds,
                "hours": t.total_seconds / 3600,
                "days": t.days,
                "gpu_hours": t.gpu_hours,
                "price_per_gpu_hour": t.price_per_gpu_hour,
                "cost_usd": t.cost,
            },
            "checkpoint": {
                "model_bytes": self.checkpoint.model_bytes,
                "ema_bytes": self.checkpoint.ema_bytes,
                "optimizer_bytes": self.checkpoint.optimizer_bytes,
                "module_bytes": self.checkpoint.module_bytes,
                "total_bytes": self.checkpoint.total_bytes,
                "duplicate_bytes": self.checkpoint.duplicate_bytes,
                "kept": self.keep_checkpoints,
                "storage_bytes": self.checkpoint.total_bytes * self.keep_checkpoints,
            },
            "notes": list(self.notes),
        }


def _input_kind(cfg: ExperimentConfig) -> str:
    if cfg.training.stage == "autoencoder":
        return "audio"
    if cfg.model.autoencoder.kind == "none":
        return "waveform"
    return "latents" if cfg.data.latents is not None else "audio encoded each step"


def _frozen_bytes(parts: Sequence[Component], notes: list[str]) -> float:
    """Weights on every GPU that take no gradient (the text encoder, an encoding autoencoder)."""
    total = 0.0
    for comp in parts:
        if comp.role != FROZEN:
            continue
        if comp.parameters is None:
            notes.append(f"{comp.name} was not counted: its frozen weights are not in the memory figures")
            continue
        total += comp.parameters * comp.dtype_bytes
    return total


def make_plan(
    cfg: ExperimentConfig,
    *,
    config_path: str = "",
    gpu: str = estimate.DEFAULT_GPU,
    utilization: float = estimate.DEFAULT_UTILIZATION,
    price_per_gpu_hour: float = estimate.DEFAULT_PRICE_PER_GPU_HOUR,
    peak_tflops: Optional[float] = None,
) -> Plan:
    """Count and estimate everything for ``cfg`` (meta device only: fast, no memory, no download)."""
    from sa_train.training.deepspeed_config import micro_batch_size, resolve_precision

    dist, training = cfg.distributed, cfg.training
    on_gpu = dist.device != "cpu"  # 'auto' plans for the GPU cluster the estimate is about
    precision = resolve_precision(cfg, on_gpu)
    micro = micro_batch_size(cfg, dist.num_workers)
    parts = components(cfg)
    notes: list[str] = []

    if training.stage == "autoencoder":
        compute = autoencoder_step(cfg, micro, precision)
    else:
        trainable = next(c.parameters for c in parts if c.name == "conditioning.trainable")
        compute = diffusion_step(cfg, micro, precision, context_trainable=trainable != 0)
    notes.extend(compute.notes)

    trained = sum(c.parameters or 0 for c in parts if c.role == TRAINED)
    if any(c.parameters is None for c in parts if c.role == TRAINED):
        notes.append("a trained component could not be counted offline: trained parameters are a lower bound")
    frozen = _frozen_bytes(parts, notes)
    # The exported model: all that is trained but the autoencoder stage's discriminator.
    exported = sum(c.parameters or 0 for c in parts if c.role == TRAINED and c.name != "discriminator")
    memory = estimate.zero_memory(
        trained, dist.num_workers, precision, compute.activation_bytes, frozen,
        offload_optimizer=dist.offload_optimizer != "none", offload_parameters=dist.offload_params != "none",
        ema_parameters=exported if training.ema.enabled else 0,
    )
    checkpoint = estimate.checkpoint_size(exported, trained, precision, dist.zero_stage, training.ema.enabled)
    flops_per_step = compute.total_flops * training.grad_accum_steps * dist.num_workers
    time = estimate.time_estimate(
        flops_per_step, training.steps, dist.num_workers, gpu, utilization, price_per_gpu_hour, peak_tflops
    )

    notes.append(
        "memory leaves out the CUDA context (~0.5-1 GiB), DeepSpeed's communication buckets, temporaries "
        "and allocator fragmentation: keep some 20% headroom"
    )
    if training.ema.enabled:
        notes.append(
            "the EMA is an fp32 copy of the exported weights kept beside DeepSpeed's fp32 master, sharded like "
            "it (4 bytes per parameter / GPUs; whole on rank 0 at ZeRO-0 in fp32)"
        )
    if dist.device == "cpu":
        notes.append(
            "this config trains on CPU (distributed.device=cpu); the time is what it would take on the GPUs named"
        )
    if precision == "fp32":
        notes.append("fp32 training runs well below the bf16 peak used for the time estimate")
    notes.append(
        f"utilisation {utilization:g} of the bf16 peak and {price_per_gpu_hour:g} USD per GPU hour are assumptions "
        "(--utilization, --price-per-gpu-hour)"
    )
    return Plan(
        config=config_path,
        stage=training.stage,
        input_kind=_input_kind(cfg),
        precision=precision,
        global_batch=training.global_batch_size,
        workers=dist.num_workers,
        grad_accum_steps=training.grad_accum_steps,
        micro_batch=micro,
        steps=training.steps,
        zero_stage=dist.zero_stage,
        components=parts,
        compute=compute,
        frozen_bytes=frozen,
        memory=memory,
        time=time,
        checkpoint=checkpoint,
        keep_checkpoints=training.keep_checkpoints,
        notes=notes,
    )
