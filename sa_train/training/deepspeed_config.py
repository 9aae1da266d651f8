"""The DeepSpeed config, built from the typed experiment config (never a hard-coded dict).

An expert may name a JSON file in ``distributed.deepspeed_config``; it is merged over the built
config key by key, and the batch keys are checked afterwards so they still agree with the typed
config's global batch size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sa_train.config import ConfigError, ExperimentConfig
from sa_train.training.config import OptimizerConfig


def micro_batch_size(cfg: ExperimentConfig, world_size: int) -> int:
    """Examples per worker per micro-step: global batch / (workers x accumulation)."""
    per_step = world_size * cfg.training.grad_accum_steps
    if cfg.training.global_batch_size % per_step:
        raise ConfigError(
            f"training.global_batch_size={cfg.training.global_batch_size} is not divisible by "
            f"{world_size} workers x training.grad_accum_steps={cfg.training.grad_accum_steps}"
        )
    return cfg.training.global_batch_size // per_step


def resolve_precision(cfg: ExperimentConfig, on_gpu: bool) -> str:
    if cfg.training.precision == "auto":
        return "bf16" if on_gpu else "fp32"
    if cfg.training.precision in ("bf16", "fp16") and not on_gpu:
        raise ConfigError(f"training.precision={cfg.training.precision} needs a GPU; use fp32 or auto on CPU")
    return cfg.training.precision


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def build_deepspeed_config(
    cfg: ExperimentConfig, optimizer: OptimizerConfig, world_size: int, on_gpu: bool
) -> dict[str, Any]:
    """DeepSpeed config for one trained model (the generator or the discriminator share everything but the optimizer)."""
    dist = cfg.distributed
    micro = micro_batch_size(cfg, world_size)
    precision = resolve_precision(cfg, on_gpu)
    zero: dict[str, Any] = {"stage": dist.zero_stage}
    if dist.zero_stage >= 2:
        # Contiguous gradients avoid fragmenting GPU memory. On CPU there is nothing to fragment, and the
        # copy in each parameter's gradient hook cost the demo U-Net's step 12% (bitwise-equal weights
        # either way: benchmarks/bench_zero_cpu.py).
        zero.update(overlap_comm=on_gpu, contiguous_gradients=on_gpu, reduce_scatter=True)
    if dist.offload_optimizer == "cpu":
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    if dist.offload_params == "cpu":
        zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    config: dict[str, Any] = {
        "train_batch_size": cfg.training.global_batch_size,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": cfg.training.grad_accum_steps,
        "gradient_clipping": cfg.training.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "initial_scale_power": 16},
        # bf16 keeps 8 significant bits: summed over 64 ranks, small gradients are lost; reduce in fp32.
        "communication_data_type": "fp32" if dist.gradient_reduce_dtype == "fp32" else precision,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": optimizer.lr,
                "betas": list(optimizer.betas),
                "eps": optimizer.eps,
                "weight_decay": optimizer.weight_decay,
                # torch's AdamW: DeepSpeed's fused Adam would be JIT-compiled first (about a minute)
                # and has no CPU kernel; offloaded optimizer states need DeepSpeed's CPU Adam instead.
                "torch_adam": dist.offload_optimizer == "none",
                "adam_w_mode": True,
            },
        },
        "steps_per_print": 10**9,  # sa_train logs progress itself
        "wall_clock_breakdown": False,
    }
    if dist.deepspeed_config:
        path = Path(dist.deepspeed_config)
        try:
            extra = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"distributed.deepspeed_config: file not found: {path}") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"distributed.deepspeed_config: {path} is not valid JSON: {err}") from None
        config = _deep_merge(config, extra)
        batch = config["train_micro_batch_size_per_gpu"] * config["gradient_accumulation_steps"] * world_size
        if batch != config["train_batch_size"]:
            raise ConfigError(
                f"{path}: train_batch_size {config['train_batch_size']} != micro batch x accumulation x "
                f"{world_size} workers = {batch}; set training.global_batch_size instead of the DeepSpeed keys"
            )
    return config
