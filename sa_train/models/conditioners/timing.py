"""Timing conditioning: seconds_start and seconds_total as one cross-attention token each.

The paper looks each integer second (clamped to 0..512) up in a learned table, one table per
quantity, and appends the two tokens after the text tokens. A later variant maps seconds / 512
through learned Fourier features and a linear layer, and also feeds both embeddings as a global
conditioning vector. ``kind: none`` gives no timing tokens (an ablation, or unconditional timing).

One rounding rule, at training and at generation (:func:`conditioning_seconds`): the embeddings
see whole seconds, ``floor(seconds_start)`` and ``ceil(seconds_total)``, which is what the data
pipeline (sa_train.data.decode) gives a crop at that offset of a file of that length. Training
values are already whole, so the rule changes nothing there; a request for 2.5 s is conditioned
like the files of 2-3 s that trained the embedding of 3 (and its output is then trimmed at 2.5 s),
where flooring would select the files of 1-2 s. Both kinds follow it: the Fourier features never
saw a fractional second either.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from sa_train.config.fields import ConfigError
from sa_train.models.conditioners.config import TimingConfig

KEY = "model.conditioning.timing"

# Float noise in a request (2.0000001 s computed from frames) must not move it to the next second.
# 1e-4 s is above float32's resolution at 512 s (6e-5 s) and far below any length one asks for.
ROUNDING_TOLERANCE_S = 1e-4


def conditioning_seconds(seconds_start: torch.Tensor, seconds_total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole seconds the timing embeddings see, by the data pipeline's rule.

    ``seconds_start: (B,)`` -> floor, as ``floor(crop offset / rate)``; ``seconds_total: (B,)`` ->
    ceil, as ``ceil(file frames / rate)``; each within ROUNDING_TOLERANCE_S of a whole second is
    that second. Float32 results, not yet clamped.
    """
    start = torch.floor(seconds_start.float() + ROUNDING_TOLERANCE_S)
    total = torch.ceil(seconds_total.float() - ROUNDING_TOLERANCE_S)
    return start, total


class PerSecondEmbedding(nn.Module):
    """A learned vector per whole second: seconds are floored and clamped to 0..max_seconds (a
    plain lookup, as stable-audio-tools' IntConditioner; TimingEmbedding rounds first).

    ``forward(seconds: (batch,)) -> (batch, width)``.
    """

    def __init__(self, max_seconds: int, width: int) -> None:
        super().__init__()
        self.max_seconds = max_seconds
        self.table = nn.Embedding(max_seconds + 1, width)

    def forward(self, seconds: torch.Tensor) -> torch.Tensor:
        index = torch.floor(seconds.float()).clamp(0, self.max_seconds).long()
        return self.table(index)


class FourierEmbedding(nn.Module):
    """seconds / max_seconds (clamped to 0..1) through learned Fourier features and a linear layer.

    The frequencies are learned; the raw normalised value is kept next to sin and cos so that the
    linear layer also sees a monotone input. ``forward(seconds: (batch,)) -> (batch, width)``.
    """

    def __init__(self, max_seconds: int, width: int, num_features: int) -> None:
        super().__init__()
        assert num_features % 2 == 0, "checked by check_conditioning"
        self.max_seconds = max_seconds
        self.frequencies = nn.Parameter(torch.randn(num_features // 2))
        self.linear = nn.Linear(num_features + 1, width)

    def forward(self, seconds: torch.Tensor) -> torch.Tensor:
        x = (seconds.float() / self.max_seconds).clamp(0.0, 1.0).unsqueeze(-1)  # (batch, 1)
        angles = 2 * math.pi * x * self.frequencies.float()  # (batch, num_features / 2)
        features = torch.cat([x, angles.sin(), angles.cos()], dim=-1)
        return self.linear(features.to(self.linear.weight.dtype))


class TimingEmbedding(nn.Module):
    """Embeds (seconds_start, seconds_total) by ``cfg.kind``, one module per quantity.

    ``forward(seconds_start: (B,), seconds_total: (B,)) -> (tokens, global_cond)``, the seconds
    rounded by :func:`conditioning_seconds` (start down, total up) before either kind embeds them, with
    tokens: (B, 2, width) [start, total] or (B, 0, width) for kind none, and
    global_cond: (B, 2 * width) (the two tokens concatenated) or None when global_condition is off.
    """

    def __init__(self, cfg: TimingConfig, width: int) -> None:
        super().__init__()
        if cfg.global_condition and cfg.kind == "none":
            raise ConfigError(f"{KEY}.global_condition=true needs {KEY}.kind per_second or fourier, not none")
        self.kind = cfg.kind
        self.width = width
        self.global_condition = cfg.global_condition
        if cfg.kind == "per_second":
            self.start = PerSecondEmbedding(cfg.max_seconds, width)
            self.total = PerSecondEmbedding(cfg.max_seconds, width)
        elif cfg.kind == "fourier":
            if cfg.fourier_features % 2:
                raise ConfigError(f"{KEY}.fourier_features={cfg.fourier_features} must be even")
            self.start = FourierEmbedding(cfg.max_seconds, width, cfg.fourier_features)
            self.total = FourierEmbedding(cfg.max_seconds, width, cfg.fourier_features)
        elif cfg.kind != "none":
            raise ConfigError(f"{KEY}.kind={cfg.kind!r} is not allowed; choose per_second, fourier or none")

    @property
    def num_tokens(self) -> int:
        """Context tokens added after the text tokens: 2, or 0 for kind none."""
        return 0 if self.kind == "none" else 2

    @property
    def global_width(self) -> Optional[int]:
        """Width of the global conditioning vector, or None when there is none."""
        return 2 * self.width if self.global_condition else None

    def forward(
        self, seconds_start: torch.Tensor, seconds_total: torch.Tensor
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if seconds_start.shape != seconds_total.shape or seconds_start.ndim != 1:
            raise ValueError(
                f"seconds_start {tuple(seconds_start.shape)} and seconds_total {tuple(seconds_total.shape)} "
                "must both have shape (batch,)"
            )
        if self.kind == "none":
            batch = seconds_start.shape[0]
            return seconds_start.new_zeros((batch, 0, self.width), dtype=torch.float32), None
        seconds_start, seconds_total = conditioning_seconds(seconds_start, seconds_total)
        start, total = self.start(seconds_start), self.total(seconds_total)  # (B, width) each
        tokens = torch.stack([start, total], dim=1)
        global_cond = torch.cat([start, total], dim=-1) if self.global_condition else None
        return tokens, global_cond
