"""The 1D U-Net denoiser of Stable Audio: ResNet blocks modulated by the diffusion time, transformer
blocks with self-attention and cross-attention to the text/timing tokens, at several resolutions.

Layout (widths w_i = base_width x multipliers[i], n = len(factors) levels):

    stem        ResNet in_channels -> w_0                        (its output is added back at the end)
    level i     downsample w_i -> w_{i+1} by factors[i], resnet_blocks ResNets,
                attention_blocks[i] transformer blocks           (every ResNet / transformer output is a skip)
    bottleneck  ResNet, attention_blocks[-1] transformer blocks, ResNet at w_n
    up level i  one ResNet per skip of level i (resnet_blocks, +1 when it has attention), each fed the
                running signal concatenated with its skip scaled by 1/sqrt(2); the same transformer
                blocks; upsample w_{i+1} -> w_i by factors[i]
    head        ResNet w_0 -> in_channels: the v prediction

Self-attention has no positional information by default, as the paper's: position comes from the
convolutions' zero padding at the window's borders, which only a deep enough U-Net sees across the
window. ``positional_encoding: sinusoidal`` adds fixed sin/cos encodings of the frame index to every
self-attention input instead (no parameters, so checkpoints and parameter counts are unchanged).

Skips are concatenated (not added) so the up path can weigh them; the 1/sqrt(2) keeps the variance
of the concatenation close to that of one input. This is the reference layout of Stable Audio 1.0
(audio-diffusion-pytorch UNet1d, stable-audio-tools ``adp_cfg_1d``); with the paper's preset it has
906,619,072 parameters, and the reference's 906,679,744 adds the 79 x 768 learned null-conditioning
sequence for classifier-free guidance, which lives with the diffusion wrapper, not in the U-Net.
"""

from __future__ import annotations

import logging
import math
from typing import Optional

import torch
import torch.nn as nn

from sa_train.models.unet.blocks import (
    ConditioningMapping,
    Downsample1d,
    MultiHeadAttention,
    ResnetBlock1d,
    Transformer1d,
    Upsample1d,
    run_block,
)
from sa_train.models.unet.config import ATTENTION_BACKENDS, UNetConfig

logger = logging.getLogger(__name__)

SKIP_SCALE = 1 / math.sqrt(2)


def _check_config(cfg: UNetConfig) -> None:
    """Shape rules the blocks rely on (validate.py checks most of them for whole experiment configs)."""
    levels = len(cfg.factors)
    if len(cfg.multipliers) != levels + 1:
        raise ValueError(
            f"model.unet.multipliers has {len(cfg.multipliers)} entries; it needs len(model.unet.factors) + 1 "
            f"= {levels + 1} (one per level plus the bottleneck)"
        )
    if len(cfg.attention_blocks) != levels + 1:
        raise ValueError(
            f"model.unet.attention_blocks has {len(cfg.attention_blocks)} entries; it needs "
            f"{levels + 1} (one per level plus the bottleneck)"
        )
    for i, m in enumerate(cfg.multipliers):
        width = cfg.base_width * m
        if width % cfg.norm_groups:
            raise ValueError(
                f"model.unet width base_width x multipliers[{i}] = {width} is not divisible by "
                f"model.unet.norm_groups={cfg.norm_groups}; pick norm_groups dividing every width"
            )
        if width % cfg.num_heads:
            raise ValueError(
                f"model.unet width base_width x multipliers[{i}] = {width} is not divisible by "
                f"model.unet.num_heads={cfg.num_heads}"
            )
        groups = cfg.attention_norm_groups or cfg.norm_groups
        # Width i is level i - 1's (i >= 1) and, for the last, the bottleneck's.
        has_attention = (i >= 1 and cfg.attention_blocks[i - 1] > 0) or (i == levels and cfg.attention_blocks[-1] > 0)
        if has_attention and width % groups:
            raise ValueError(
                f"model.unet width base_width x multipliers[{i}] = {width} has transformer blocks but is not "
                f"divisible by model.unet.attention_norm_groups={cfg.attention_norm_groups} (0 = norm_groups)"
            )


class _Level(nn.Module):
    """One resolution of the U-Net: a resampler, ResNet blocks and an optional transformer stack."""

    def __init__(self, resample: nn.Module, resnets: list[ResnetBlock1d], transformer: Optional[Transformer1d]):
        super().__init__()
        self.resample = resample
        self.resnets = nn.ModuleList(resnets)
        self.transformer = transformer


class UNet1D(nn.Module):
    """The diffusion U-Net (see the module docstring for the layout).

    Args:
        cfg: the ``model.unet`` config.
        global_cond_width: width of an optional global conditioning vector (e.g. timing), added to
            the time embedding before the modulation MLP; None = no global conditioning.
    """

    def __init__(self, cfg: UNetConfig, global_cond_width: Optional[int] = None):
        super().__init__()
        _check_config(cfg)
        self.cfg = cfg
        widths = [cfg.base_width * m for m in cfg.multipliers]
        mod, groups = cfg.modulation_width, cfg.norm_groups

        def transformer(num_blocks: int, width: int) -> Optional[Transformer1d]:
            if num_blocks == 0:
                return None
            return Transformer1d(
                num_blocks, width, cfg.num_heads, cfg.context_width, cfg.feedforward_multiplier,
                cfg.attention_norm_groups or groups, cfg.attention_backend, cfg.positional_encoding,
                context_mask=cfg.context_mask,
            )

        self.mapping = ConditioningMapping(cfg.time_embedding_width, mod, global_cond_width)
        # One group in the stem and head: in_channels may be as small as 2 (stereo waveform).
        self.stem = ResnetBlock1d(cfg.in_channels, widths[0], mod, num_groups=1)
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        for i, factor in enumerate(cfg.factors):
            w_in, w = widths[i], widths[i + 1]
            attn = cfg.attention_blocks[i]
            self.down.append(
                _Level(
                    Downsample1d(w_in, w, factor, padding=cfg.downsample_padding),
                    [ResnetBlock1d(w, w, mod, groups) for _ in range(cfg.resnet_blocks)],
                    transformer(attn, w),
                )
            )
            num_skips = cfg.resnet_blocks + (1 if attn else 0)
            self.up.append(
                _Level(
                    Upsample1d(w, w_in, factor),
                    [ResnetBlock1d(2 * w, w, mod, groups) for _ in range(num_skips)],
                    transformer(attn, w),
                )
            )
        self.bottleneck = _Level(
            nn.Identity(),
            [ResnetBlock1d(widths[-1], widths[-1], mod, groups) for _ in range(2)],
            transformer(cfg.attention_blocks[-1], widths[-1]),
        )
        self.head = ResnetBlock1d(widths[0], cfg.in_channels, mod, num_groups=1)
        self.set_gradient_checkpointing(cfg.gradient_checkpointing)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute each ResNet and transformer block's activations in backward (saves memory)."""
        self.gradient_checkpointing = enabled
        for module in self.modules():
            if isinstance(module, Transformer1d):
                module.gradient_checkpointing = enabled

    def set_attention_backend(self, backend: str) -> None:
        """Switch every attention layer to 'auto', 'xformers', 'sdpa' or 'math'."""
        if backend not in ATTENTION_BACKENDS:
            allowed = ", ".join(repr(b) for b in ATTENTION_BACKENDS)
            raise ValueError(f"attention backend {backend!r} is unknown; use one of {allowed}")
        for module in self.modules():
            if isinstance(module, MultiHeadAttention):
                module.backend = backend

    def _resnet(self, block: ResnetBlock1d, x: torch.Tensor, mapping: torch.Tensor) -> torch.Tensor:
        return run_block(block, x, mapping, use_checkpoint=self.gradient_checkpointing)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        context_mask: Optional[torch.Tensor] = None,
        global_cond: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Predict v for the noisy input.

        Args:
            x: (batch, in_channels, time) noisy latents; time divisible by ``cfg.downsampling``.
            t: (batch,) diffusion time in [0, 1].
            context: (batch, tokens, context_width) cross-attention tokens (text + timing).
            context_mask: (batch, tokens) bool, True = real token; None = all real.
            global_cond: (batch, global_cond_width) or None.

        Returns:
            (batch, in_channels, time) the v prediction.
        """
        length, total = x.shape[-1], self.cfg.downsampling
        if length % total:
            raise ValueError(
                f"input length T={length} is not divisible by the U-Net's total downsampling {total} "
                f"(product of model.unet.factors={self.cfg.factors}); pad or crop to a multiple of {total}"
            )
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape (batch,) = ({x.shape[0]},), got {tuple(t.shape)}")
        mapping = self.mapping(t, global_cond)

        h = self._resnet(self.stem, x, mapping)
        stem_out = h
        skips: list[torch.Tensor] = []
        for level in self.down:
            h = level.resample(h)
            for block in level.resnets:
                h = self._resnet(block, h, mapping)
                skips.append(h)
            if level.transformer is not None:
                h = level.transformer(h, context, context_mask)
                skips.append(h)

        first, second = self.bottleneck.resnets
        h = self._resnet(first, h, mapping)
        if self.bottleneck.transformer is not None:
            h = self.bottleneck.transformer(h, context, context_mask)
        h = self._resnet(second, h, mapping)

        for level in reversed(self.up):
            for block in level.resnets:
                h = self._resnet(block, torch.cat([h, skips.pop() * SKIP_SCALE], dim=1), mapping)
            if level.transformer is not None:
                h = level.transformer(h, context, context_mask)
            h = level.resample(h)
        assert not skips, "every skip of the down path is consumed by the up path"

        return self._resnet(self.head, h + stem_out, mapping)
