"""Config of a training run (section ``training``), owned by this package."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from sa_train.config.fields import param, section


@dataclass
class OptimizerConfig:
    """An AdamW optimizer."""

    name: str = param("adamw", "optimizer", choices=["adamw"])
    lr: float = param(1e-4, "peak learning rate", min=0, min_exclusive=True)
    betas: List[float] = param([0.9, 0.999], "Adam betas (beta1, beta2)", min=0, max=1)
    weight_decay: float = param(1e-3, "decoupled weight decay", min=0)
    eps: float = param(1e-8, "Adam epsilon", min=0, min_exclusive=True)


@dataclass
class LRScheduleConfig:
    """Learning rate over steps: linear warmup, then a decay."""

    kind: str = param(
        "constant", "decay after warmup: 'constant', 'exponential' (lr x gamma^step) or 'cosine'",
        choices=["constant", "exponential", "cosine"],
    )
    warmup_steps: int = param(0, "linear warmup from 0 to the peak lr (optimizer steps)", min=0)
    gamma: float = param(0.999996, "per-step factor of the exponential decay (paper VAE: 0.999996)", min=0, max=1)
    min_lr_ratio: float = param(0.0, "floor of the cosine decay as a fraction of the peak lr", min=0, max=1)


@dataclass
class EMAConfig:
    """Exponential moving average of the trained weights, used for sampling and export."""

    enabled: bool = param(True, "keep an EMA copy of the trained weights")
    decay: float = param(0.999, "EMA decay per optimizer step", min=0, max=1)
    start_step: int = param(0, "optimizer step from which the EMA starts averaging (copies before)", min=0)


@dataclass
class TrainingConfig:
    """What is trained, for how long, with what batch and optimizer, and how often it is saved."""

    stage: str = param(
        "diffusion", "'autoencoder' (VAE + discriminator) or 'diffusion' (U-Net on latents)",
        choices=["autoencoder", "diffusion"],
    )
    steps: int = param(200, "optimizer steps to train", min=1)
    global_batch_size: int = param(4, "examples per optimizer step over all workers (paper: 256)", min=1)
    grad_accum_steps: int = param(1, "micro-batches accumulated per optimizer step", min=1)
    optimizer: OptimizerConfig = section(OptimizerConfig, "optimizer of the trained model (generator for the autoencoder)")
    discriminator_optimizer: OptimizerConfig = section(
        OptimizerConfig, "optimizer of the autoencoder's discriminator"
    )
    lr_schedule: LRScheduleConfig = section(LRScheduleConfig, "learning-rate schedule")
    ema: EMAConfig = section(EMAConfig, "EMA of the trained weights")
    precision: str = param(
        "auto", "'auto' (bf16 on GPU, fp32 on CPU), 'fp32', 'bf16' or 'fp16'", choices=["auto", "fp32", "bf16", "fp16"]
    )
    grad_clip: float = param(1.0, "clip the global gradient norm to this; 0 = no clipping", min=0)
    adversarial_start_step: int = param(
        0, "autoencoder stage: step from which the adversarial and feature-matching losses apply", min=0
    )
    checkpoint_every: int = param(100, "save a checkpoint every this many steps (and at the end)", min=1)
    keep_checkpoints: int = param(2, "how many recent checkpoints to keep", min=1)
    sample_every: int = param(0, "log audio samples from the EMA model every this many steps; 0 = only at the end", min=0)
    sample_prompts: List[str] = param(
        ["a sine tone at A4 (440.0 Hz), 1.00 seconds", "a drum pattern at 120 BPM, 2.50 seconds"],
        "prompts of the logged audio samples",
    )
    sample_seconds: List[float] = param([1.0, 2.5], "seconds_total of the logged audio samples (cycled over prompts)", min=0)
    log_every: int = param(10, "log a progress line and metrics every this many steps", min=1)
    max_nonfinite_steps: int = param(
        5, "stop with an error after this many consecutive steps with a non-finite loss (each is skipped)", min=1
    )
    seed: int = param(0, "seed of model init, data order, crops and diffusion noise")
