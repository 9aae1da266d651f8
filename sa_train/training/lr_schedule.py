"""Learning-rate multiplier over optimizer steps: linear warmup, then constant, exponential or cosine decay."""

from __future__ import annotations

import math
from typing import Callable

from sa_train.training.config import LRScheduleConfig


def lr_multiplier(cfg: LRScheduleConfig, total_steps: int) -> Callable[[int], float]:
    """A function step -> factor applied to the peak lr (for torch.optim.lr_scheduler.LambdaLR)."""

    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        after = step - cfg.warmup_steps
        if cfg.kind == "exponential":
            return cfg.gamma**after
        if cfg.kind == "cosine":
            span = max(1, total_steps - cfg.warmup_steps)
            progress = min(1.0, after / span)
            return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor
