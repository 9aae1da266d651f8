"""Memory per GPU under each DeepSpeed ZeRO stage, and time and cost of a run: plain arithmetic on
the counted parameters and FLOPs, kept apart so every formula can be checked by hand.

Memory follows the ZeRO paper (Rajbhandari et al., 2020) for Adam:

    mixed precision (bf16/fp16)   parameters 2 B, gradients 2 B, optimizer 12 B (fp32 master
                                  weights, first and second moments) per trained parameter
    fp32                          parameters 4 B, gradients 4 B, optimizer 8 B (two moments)

    stage 0  nothing sharded      stage 2  optimizer states and gradients / N
    stage 1  optimizer states / N stage 3  optimizer states, gradients and parameters / N

The EMA (``training.ema``) is an fp32 copy of the exported model's trained weights beside DeepSpeed's
fp32 master: 4 B per parameter, sharded like the master (over N from stage 1, and at stage 0 with
bf16; whole on rank 0 at stage 0 in fp32), in CPU memory when the optimizer is offloaded.

A checkpoint (:func:`checkpoint_size`) holds, summed over ranks: ``model.safetensors`` and
``ema.safetensors`` (fp32, 4 B per exported parameter each), DeepSpeed's optimizer shards (fp32
master + Adam moments: 12 B per trained parameter; 8 B at stage 0 in fp32, where the module's own
weights are the master) and DeepSpeed's copy of the module's weights in the training precision
(stages 0-2; none at stage 3).

Time = FLOPs per step x steps / (GPUs x peak x utilisation). The peaks are the GPUs' dense bf16
tensor-core figures from their data sheets; the utilisation (the fraction of that peak a real run
sustains, 0.3 to 0.5 is typical for large convolution + attention models) and the price per GPU
hour are assumptions the user states with flags.
"""

from __future__ import annotations

from dataclasses import dataclass

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets (SXM parts).
GPU_PEAK_TFLOPS = {"a100": 312.0, "h100": 989.0, "h200": 989.0, "l4": 121.0}
DEFAULT_GPU = "a100"
DEFAULT_UTILIZATION = 0.4
# An assumption, not a quote: roughly an on-demand A100 40 GB in a large cloud (8-GPU instances).
DEFAULT_PRICE_PER_GPU_HOUR = 4.1

# (parameters, gradients, optimizer states) bytes per trained parameter with Adam.
MIXED_PRECISION_BYTES = (2, 2, 12)
FP32_BYTES = (4, 4, 8)
ZERO_STAGES = (0, 1, 2, 3)


def bytes_per_parameter(precision: str) -> tuple[int, int, int]:
    """(parameters, gradients, optimizer states) bytes per trained parameter for Adam."""
    return MIXED_PRECISION_BYTES if precision in ("bf16", "fp16") else FP32_BYTES


@dataclass
class ZeroMemory:
    """Memory per GPU of one ZeRO stage, in bytes (state = parameters + gradients + optimizer)."""

    stage: int
    parameters_bytes: float
    gradients_bytes: float
    optimizer_bytes: float
    activations_bytes: float
    frozen_bytes: float
    offloaded: str = ""  # what lives in CPU memory instead (distributed.offload_*)
    ema_bytes: float = 0.0  # this rank's share of the fp32 EMA (the largest share: rank 0's)

    @property
    def state_bytes(self) -> float:
        return self.parameters_bytes + self.gradients_bytes + self.optimizer_bytes

    @property
    def total_bytes(self) -> float:
        return self.state_bytes + self.ema_bytes + self.activations_bytes + self.frozen_bytes


def zero_memory(
    trained_parameters: int,
    workers: int,
    precision: str,
    activations_bytes: float,
    frozen_bytes: float,
    offload_optimizer: bool = False,
    offload_parameters: bool = False,
    ema_parameters: int = 0,
) -> list[ZeroMemory]:
    """Memory per GPU for ZeRO stages 0-3 with Adam over ``workers`` data-parallel GPUs.

    Offloading (ZeRO-Offload) moves the optimizer states (stages 1-3) and, at stage 3, the
    parameters to CPU memory; they then count 0 here. ``ema_parameters``: parameters the EMA
    averages (0 without an EMA); it is sharded like the fp32 master weights.
    """
    if workers < 1:
        raise ValueError(f"workers={workers} must be at least 1 (distributed.num_workers)")
    p_bytes, g_bytes, o_bytes = (b * trained_parameters for b in bytes_per_parameter(precision))
    rows = []
    for stage in ZERO_STAGES:
        optimizer = o_bytes / workers if stage >= 1 else o_bytes
        gradients = g_bytes / workers if stage >= 2 else g_bytes
        parameters = p_bytes / workers if stage >= 3 else p_bytes
        offloaded = []
        if offload_optimizer and stage >= 1:
            optimizer, offloaded = 0.0, offloaded + ["optimizer states"]
        if offload_parameters and stage == 3:
            parameters, offloaded = 0.0, offloaded + ["parameters"]
        ema = 4.0 * ema_parameters
        if stage >= 1 or precision in ("bf16", "fp16"):  # beside a sharded fp32 master (BF16_Optimizer too)
            ema /= workers
        if offload_optimizer and stage >= 1:
            ema = 0.0
        rows.append(
            ZeroMemory(
                stage, parameters, gradients, optimizer, activations_bytes, frozen_bytes, " and ".join(offloaded), ema
            )
        )
    return rows


@dataclass
class CheckpointSize:
    """Bytes of one checkpoint, summed over its files (all ranks)."""

    model_bytes: float  # model.safetensors: fp32 weights of the exported model
    ema_bytes: float  # ema.safetensors (0 without an EMA)
    optimizer_bytes: float  # DeepSpeed's optimizer shards: fp32 master + Adam moments
    module_bytes: float  # DeepSpeed's copy of the module's weights (training precision; none at stage 3)

    @property
    def total_bytes(self) -> float:
        return self.model_bytes + self.ema_bytes + self.optimizer_bytes + self.module_bytes

    @property
    def duplicate_bytes(self) -> float:
        """model.safetensors repeats the fp32 master already in the optimizer shards."""
        return self.model_bytes


def checkpoint_size(exported_parameters: int, trained_parameters: int, precision: str, zero_stage: int,
                    ema: bool) -> CheckpointSize:
    """The size of one checkpoint (see the module doc). ``exported_parameters``: the trained model
    that is exported (the U-Net and its trainable conditioning, or the VAE); ``trained_parameters``:
    everything with an optimizer (the discriminator too)."""
    mixed = precision in ("bf16", "fp16")
    optimizer = 8 if zero_stage == 0 and not mixed else 12
    module = 0 if zero_stage == 3 else bytes_per_parameter(precision)[0]
    return CheckpointSize(
        model_bytes=4.0 * exported_parameters,
        ema_bytes=4.0 * exported_parameters if ema else 0.0,
        optimizer_bytes=float(optimizer * trained_parameters),
        module_bytes=float(module * trained_parameters),
    )


@dataclass
class TimeEstimate:
    """Wall-clock time and cost of ``steps`` optimizer steps on ``gpus`` GPUs."""

    gpu: str
    peak_tflops: float
    utilization: float
    gpus: int
    flops_per_step: float
    steps: int
    price_per_gpu_hour: float

    @property
    def achieved_flops_per_second(self) -> float:
        """FLOP/s of the whole cluster at the stated utilisation."""
        return self.gpus * self.peak_tflops * 1e12 * self.utilization

    @property
    def seconds_per_step(self) -> float:
        return self.flops_per_step / self.achieved_flops_per_second

    @property
    def total_seconds(self) -> float:
        return self.seconds_per_step * self.steps

    @property
    def days(self) -> float:
        return self.total_seconds / 86400

    @property
    def gpu_hours(self) -> float:
        return self.total_seconds / 3600 * self.gpus

    @property
    def cost(self) -> float:
        return self.gpu_hours * self.price_per_gpu_hour


def time_estimate(
    flops_per_step: float,
    steps: int,
    gpus: int,
    gpu: str = DEFAULT_GPU,
    utilization: float = DEFAULT_UTILIZATION,
    price_per_gpu_hour: float = DEFAULT_PRICE_PER_GPU_HOUR,
    peak_tflops: float | None = None,
) -> TimeEstimate:
    """Time for ``steps`` steps at ``utilization`` of the GPU's bf16 peak (``peak_tflops``
    overrides the table, e.g. for a GPU not in it)."""
    if peak_tflops is None:
        if gpu not in GPU_PEAK_TFLOPS:
            known = ", ".join(sorted(GPU_PEAK_TFLOPS))
            raise ValueError(f"unknown GPU {gpu!r}: choose one of {known}, or give its peak TFLOP/s")
        peak_tflops = GPU_PEAK_TFLOPS[gpu]
    if peak_tflops <= 0:
        raise ValueError(f"peak TFLOP/s must be positive, got {peak_tflops}")
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization={utilization} must lie in (0, 1]: the fraction of the peak a run sustains")
    if price_per_gpu_hour < 0:
        raise ValueError(f"price per GPU hour must not be negative, got {price_per_gpu_hour}")
    if gpus < 1:
        raise ValueError(f"gpus={gpus} must be at least 1 (distributed.num_workers)")
    return TimeEstimate(gpu, peak_tflops, utilization, gpus, flops_per_step, steps, price_per_gpu_hour)
