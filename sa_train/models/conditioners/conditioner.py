"""The conditioner: prompts and timing -> the U-Net's cross-attention context (and global vector),
plus the null conditioning of classifier-free guidance.

Context layout, per example: the text tokens (max_length of them, padded ones masked out), then
the timing tokens [seconds_start, seconds_total] (always attended). For CFG the WHOLE sequence,
text and timing (and the global vector), is replaced by the null conditioning: a learned (L, W)
sequence or zeros, with every null token attended (or, with model.diffusion.null_mask=prompt as
stable-audio-tools, the tokens the prompt's mask leaves).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Optional, Sequence, Union

import torch
from torch import nn

from sa_train.models.conditioners.config import ConditioningConfig, check_conditioning
from sa_train.models.conditioners.text import TextEncoder, build_text_encoder
from sa_train.models.conditioners.timing import TimingEmbedding

if TYPE_CHECKING:  # only its fields are read; importing it here would close an import cycle
    from sa_train.diffusion.config import DiffusionConfig

logger = logging.getLogger(__name__)

Seconds = Union[torch.Tensor, Sequence[float]]
NULL_INIT_STD = 0.02  # small, like token embeddings: the null starts near "no information"


@dataclasses.dataclass
class Conditioning:
    """What the U-Net is conditioned on besides the diffusion time.

    context: (batch, length, width) cross-attention tokens.
    context_mask: (batch, length) bool, True where a token may be attended.
    global_cond: (batch, global_width) or None.
    """

    context: torch.Tensor
    context_mask: torch.Tensor
    global_cond: Optional[torch.Tensor] = None

    @property
    def batch_size(self) -> int:
        return self.context.shape[0]

    def to(self, device: Union[str, torch.device]) -> "Conditioning":
        g = None if self.global_cond is None else self.global_cond.to(device)
        return Conditioning(self.context.to(device), self.context_mask.to(device), g)

    @staticmethod
    def concat(items: Sequence["Conditioning"]) -> "Conditioning":
        """Stack along the batch, e.g. [cond, null] for one guided denoiser call."""
        has_global = {item.global_cond is not None for item in items}
        assert len(has_global) == 1, "all conditionings must agree on having a global vector"
        glob = torch.cat([i.global_cond for i in items]) if has_global.pop() else None
        return Conditioning(
            torch.cat([i.context for i in items]), torch.cat([i.context_mask for i in items]), glob
        )


class Conditioner(nn.Module):
    """Text encoder + timing embedding + CFG null conditioning.

    ``forward(prompts: list of B str, seconds_start: (B,), seconds_total: (B,)) -> Conditioning``
    with context (B, context_length, context_width), context_length = max_length + timing tokens.
    ``parameters()`` and ``state_dict()`` hold only the trainable parts (projection, timing
    embeddings, learned null); the frozen text encoder is rebuilt from the config.
    """

    def __init__(self, cfg: ConditioningConfig, diffusion: DiffusionConfig, context_width: int) -> None:
        super().__init__()
        check_conditioning(cfg)
        self.context_width = context_width
        self.cfg_dropout = diffusion.cfg_dropout
        self.null_kind = diffusion.null_embedding
        self.null_mask = diffusion.null_mask
        self.text_encoder: TextEncoder = build_text_encoder(cfg.text_encoder, context_width)
        self.timing = TimingEmbedding(cfg.timing, context_width)
        if self.null_kind == "learned":
            self.null_context = nn.Parameter(torch.randn(self.context_length, context_width) * NULL_INIT_STD)
        elif self.null_kind == "zeros":
            self.null_context = None
        else:
            raise ValueError(f"model.diffusion.null_embedding={self.null_kind!r}: choose 'learned' or 'zeros'")
        logger.info(
            "conditioner: %s, timing=%s, context %d x %d, global=%s, null=%s, %d trainable parameters",
            self.text_encoder.description,
            self.timing.kind,
            self.context_length,
            context_width,
            self.global_cond_width,
            self.null_kind,
            sum(p.numel() for p in self.parameters()),
        )

    @property
    def context_length(self) -> int:
        """Tokens per example: text max_length + timing tokens (paper: 77 + 2 = 79)."""
        return self.text_encoder.max_length + self.timing.num_tokens

    @property
    def global_cond_width(self) -> Optional[int]:
        """Width of global_cond (2 x context_width when timing.global_condition), else None."""
        return self.timing.global_width

    @property
    def device(self) -> torch.device:
        return self.text_encoder.device

    def _seconds(self, seconds: Seconds, name: str, batch: int) -> torch.Tensor:
        tensor = torch.as_tensor(seconds, dtype=torch.float32, device=self.device)
        if tensor.shape != (batch,):
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}; expected ({batch},), one value per prompt")
        return tensor

    def forward(self, prompts: Sequence[str], seconds_start: Seconds, seconds_total: Seconds) -> Conditioning:
        if isinstance(prompts, str):
            raise ValueError("prompts must be a list of strings, one per example, not a single string")
        batch = len(prompts)
        start = self._seconds(seconds_start, "seconds_start", batch)
        total = self._seconds(seconds_total, "seconds_total", batch)
        text_tokens, text_mask = self.text_encoder(prompts)  # (B, max_length, W), (B, max_length)
        timing_tokens, global_cond = self.timing(start, total)  # (B, n, W), (B, 2W) or None
        timing_tokens = timing_tokens.to(text_tokens.dtype)
        timing_mask = torch.ones(timing_tokens.shape[:2], dtype=torch.bool, device=text_mask.device)
        return Conditioning(
            context=torch.cat([text_tokens, timing_tokens], dim=1),
            context_mask=torch.cat([text_mask, timing_mask], dim=1),
            global_cond=global_cond,
        )

    def null_conditioning(self, batch_size: int, prompt_mask: Optional[torch.Tensor] = None) -> Conditioning:
        """The CFG null: context (batch_size, context_length, W) learned or zeros, global zeros (or
        None), and a mask all True; with model.diffusion.null_mask=prompt, ``prompt_mask``
        (batch_size, context_length) of the conditioning it stands in for, when given."""
        if self.null_context is not None:
            context = self.null_context.unsqueeze(0).expand(batch_size, -1, -1)
        else:
            shape = (batch_size, self.context_length, self.context_width)
            context = torch.zeros(shape, device=self.device, dtype=self.text_encoder._placement.dtype)
        mask = torch.ones((batch_size, self.context_length), dtype=torch.bool, device=context.device)
        if self.null_mask == "prompt" and prompt_mask is not None:
            mask = prompt_mask.to(device=context.device, dtype=torch.bool)
        width = self.global_cond_width
        glob = None if width is None else torch.zeros((batch_size, width), device=context.device, dtype=context.dtype)
        return Conditioning(context, mask, glob)

    def drop_for_cfg(
        self,
        cond: Conditioning,
        probability: Optional[float] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Conditioning:
        """Replace each example's whole conditioning by the null with ``probability``
        (default: model.diffusion.cfg_dropout). Draws one uniform per example from ``generator``."""
        p = self.cfg_dropout if probability is None else float(probability)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"CFG dropout probability {p} must lie in [0, 1] (model.diffusion.cfg_dropout)")
        batch, length = cond.context.shape[:2]
        if length != self.context_length:
            raise ValueError(f"conditioning has {length} tokens; this conditioner makes {self.context_length}")
        rng_device = generator.device if generator is not None else torch.device("cpu")
        drop = (torch.rand(batch, generator=generator, device=rng_device) < p).to(cond.context.device)
        null = self.null_conditioning(batch, cond.context_mask)
        context = torch.where(drop[:, None, None], null.context.to(cond.context.dtype), cond.context)
        mask = torch.where(drop[:, None], null.context_mask, cond.context_mask)
        glob = cond.global_cond
        if glob is not None:
            glob = torch.where(drop[:, None], torch.zeros_like(glob), glob)
        return Conditioning(context, mask, glob)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable tensors (projection, timing, learned null); same as ``state_dict()``."""
        return self.state_dict()

    def frozen_parameter_count(self) -> int:
        """Parameters of the frozen text encoder (not in parameters())."""
        return self.text_encoder.frozen_parameter_count()


def build_conditioner(cfg: ConditioningConfig, diffusion: DiffusionConfig, context_width: int) -> Conditioner:
    """Build the conditioner of ``model.conditioning`` for a U-Net with ``context_width``."""
    return Conditioner(cfg, diffusion, context_width)
