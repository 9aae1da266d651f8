"""Building blocks of the 1D U-Net: ResNet blocks modulated by the time embedding, transformer
blocks with self- and cross-attention, resampling, and the time/global conditioning mapping.

The layout follows the reference U-Net of Stable Audio 1.0 (audio-diffusion-pytorch's UNet1d, as
used by stable-audio-tools' ``adp_cfg_1d``) closely enough that the paper's preset has the same
parameter count; see unet.py for how the blocks are put together.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from sa_train.models.unet.attention import attention
from sa_train.models.unet.config import CONTEXT_MASK_MODES, DOWNSAMPLE_PADDINGS, POSITIONAL_ENCODINGS


def run_block(block: nn.Module, *args: Optional[torch.Tensor], use_checkpoint: bool) -> torch.Tensor:
    """Call ``block(*args)``, recomputing its activations in backward when ``use_checkpoint``."""
    if use_checkpoint and torch.is_grad_enabled():
        return checkpoint(block, *args, use_reentrant=False)
    return block(*args)


class FourierTimeEmbedding(nn.Module):
    """Learned Fourier features of the diffusion time: [t, sin(2 pi f t), cos(2 pi f t)].

    Learned frequencies (initialised from a standard normal) rather than fixed sinusoids, because t
    is continuous in [0, 1] and the network can pick the scales it needs.
    """

    def __init__(self, features: int):
        super().__init__()
        if features % 2:
            raise ValueError(f"model.unet.time_embedding_width={features} must be even (sin and cos halves)")
        self.frequencies = nn.Parameter(torch.randn(features // 2))
        self.out_features = features + 1

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t: (batch,) -> (batch, features + 1)"""
        t = t[:, None].to(self.frequencies.dtype)
        phases = 2 * math.pi * t * self.frequencies[None, :]
        return torch.cat([t, phases.sin(), phases.cos()], dim=-1)


class ConditioningMapping(nn.Module):
    """Time (and optional global conditioning) -> one modulation vector shared by all ResNet blocks."""

    def __init__(self, time_features: int, width: int, global_cond_width: Optional[int] = None):
        super().__init__()
        fourier = FourierTimeEmbedding(time_features)
        self.time_embedding = nn.Sequential(fourier, nn.Linear(fourier.out_features, width), nn.GELU())
        self.global_embedding = (
            nn.Sequential(nn.Linear(global_cond_width, width), nn.GELU()) if global_cond_width else None
        )
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width), nn.GELU())

    def forward(self, t: torch.Tensor, global_cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        """t: (batch,), global_cond: (batch, global_cond_width) | None -> (batch, width)"""
        mapping = self.time_embedding(t)
        if self.global_embedding is not None:
            if global_cond is None:
                raise ValueError("this U-Net was built with global conditioning (global_cond_width); pass global_cond")
            mapping = mapping + self.global_embedding(global_cond.to(mapping.dtype))
        elif global_cond is not None:
            raise ValueError("global_cond was given but the U-Net was built without global_cond_width")
        return self.mlp(mapping)


class ResnetBlock1d(nn.Module):
    """GroupNorm-SiLU-conv twice, with the modulation applied as scale and shift after the second norm.

    x: (batch, in_channels, time), mapping: (batch, modulation_width) -> (batch, out_channels, time)
    """

    def __init__(self, in_channels: int, out_channels: int, modulation_width: int, num_groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, in_channels)
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size=3, padding=1)
        self.to_scale_shift = nn.Sequential(nn.SiLU(), nn.Linear(modulation_width, 2 * out_channels))
        self.norm2 = nn.GroupNorm(num_groups, out_channels)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size=3, padding=1)
        self.skip = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, mapping: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.to_scale_shift(mapping)[:, :, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return h + self.skip(x)


def sinusoidal_positions(length: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Fixed encodings of the frame indices 0..length-1, (length, width): sin of the index at
    geometrically spaced frequencies (periods 2 pi .. 10000 x 2 pi frames) in the first half of the
    channels, cos in the second (a zero channel last when width is odd)."""
    half = width // 2
    exponents = torch.arange(half, device=device, dtype=torch.float32) / max(half, 1)
    frequencies = torch.pow(10000.0, -exponents)  # (half,)
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * frequencies[None, :]
    encoding = torch.cat([angles.sin(), angles.cos()], dim=-1)
    if width % 2:
        encoding = F.pad(encoding, (0, 1))
    return encoding.to(dtype)


class MultiHeadAttention(nn.Module):
    """Pre-norm multi-head attention; self-attention when ``context_width`` is None.

    Queries and keys/values have their own LayerNorm (also in self-attention, as the reference),
    so the two roles can scale the same features differently.

    ``context_mask`` says what a padded context token does: 'exclude' gives it zero attention
    weight; 'zero_kv' zeroes its key and value (stable-audio-tools), so it still takes a share of
    the softmax (score 0) but adds nothing to the output.
    """

    def __init__(self, width: int, num_heads: int, context_width: Optional[int] = None, backend: str = "auto",
                 context_mask: str = "exclude"):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"attention width {width} is not divisible by model.unet.num_heads={num_heads}")
        if context_mask not in CONTEXT_MASK_MODES:
            allowed = ", ".join(repr(m) for m in CONTEXT_MASK_MODES)
            raise ValueError(f"model.unet.context_mask={context_mask!r} is unknown; use one of {allowed}")
        context_width = context_width or width
        self.num_heads = num_heads
        self.backend = backend
        self.context_mask = context_mask
        self.norm = nn.LayerNorm(width)
        self.norm_context = nn.LayerNorm(context_width)
        self.to_q = nn.Linear(width, width, bias=False)
        self.to_kv = nn.Linear(context_width, 2 * width, bias=False)
        self.to_out = nn.Linear(width, width)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.view(batch, length, self.num_heads, width // self.num_heads).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, context: Optional[torch.Tensor] = None, context_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """x: (batch, length, width), context: (batch, tokens, context_width), context_mask: (batch, tokens)
        bool (True = real token) -> (batch, length, width)"""
        source = x if context is None else context
        q = self._split_heads(self.to_q(self.norm(x)))
        k, v = (self._split_heads(t) for t in self.to_kv(self.norm_context(source)).chunk(2, dim=-1))
        if context_mask is not None and self.context_mask == "zero_kv":
            keep = context_mask[:, None, :, None].to(k.dtype)  # (batch, 1, tokens, 1)
            k, v, context_mask = k * keep, v * keep, None
        out = attention(q, k, v, key_padding_mask=context_mask, backend=self.backend)
        batch, _, length, _ = out.shape
        return self.to_out(out.transpose(1, 2).reshape(batch, length, -1))


class TransformerBlock1d(nn.Module):
    """Self-attention, cross-attention to the context tokens, feed-forward (GELU); each residual.

    x: (batch, length, width), context: (batch, tokens, context_width), context_mask: (batch, tokens)

    With ``positional_encoding='sinusoidal'`` the self-attention sees x plus
    :func:`sinusoidal_positions` of the frame indices (the residual stream does not), so its output
    can depend on where a frame lies in the window; 'none' is the paper's position-free attention.
    """

    def __init__(
        self,
        width: int,
        num_heads: int,
        context_width: int,
        feedforward_multiplier: int,
        backend: str,
        positional_encoding: str = "none",
        context_mask: str = "exclude",
    ):
        super().__init__()
        if positional_encoding not in POSITIONAL_ENCODINGS:
            allowed = ", ".join(repr(p) for p in POSITIONAL_ENCODINGS)
            raise ValueError(f"model.unet.positional_encoding={positional_encoding!r} is unknown; use one of {allowed}")
        self.positional_encoding = positional_encoding
        self.self_attention = MultiHeadAttention(width, num_heads, backend=backend)
        self.cross_attention = MultiHeadAttention(
            width, num_heads, context_width=context_width, backend=backend, context_mask=context_mask
        )
        # No norm before the feed-forward: the reference has none, and its weights map one to one.
        self.feed_forward = nn.Sequential(
            nn.Linear(width, width * feedforward_multiplier),
            nn.GELU(),
            nn.Linear(width * feedforward_multiplier, width),
        )

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, context_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        attention_input = x
        if self.positional_encoding == "sinusoidal":
            attention_input = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype)
        x = x + self.self_attention(attention_input)
        x = x + self.cross_attention(x, context, context_mask)
        return x + self.feed_forward(x)


class Transformer1d(nn.Module):
    """A stack of transformer blocks on a (batch, channels, time) signal, between GroupNorm + 1x1 conv
    in and a 1x1 conv out (the tokens are the time steps).

    x: (batch, width, time) -> (batch, width, time)
    """

    def __init__(
        self,
        num_blocks: int,
        width: int,
        num_heads: int,
        context_width: int,
        feedforward_multiplier: int,
        num_groups: int,
        backend: str,
        positional_encoding: str = "none",
        context_mask: str = "exclude",
    ):
        super().__init__()
        self.norm = nn.GroupNorm(num_groups, width, eps=1e-6)
        self.proj_in = nn.Conv1d(width, width, 1)
        self.blocks = nn.ModuleList(
            TransformerBlock1d(
                width, num_heads, context_width, feedforward_multiplier, backend, positional_encoding, context_mask
            )
            for _ in range(num_blocks)
        )
        self.proj_out = nn.Conv1d(width, width, 1)
        self.gradient_checkpointing = False

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, context_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        h = self.proj_in(self.norm(x)).transpose(1, 2)
        for block in self.blocks:
            h = run_block(block, h, context, context_mask, use_checkpoint=self.gradient_checkpointing)
        return self.proj_out(h.transpose(1, 2))


class Downsample1d(nn.Module):
    """Strided conv by an integer factor (kernel 2 x factor + 1); factor 1 keeps the length and only
    changes the width (a kernel-3 conv).

    ``padding='centered'`` pads factor frames on each side, so output frame j is centred on input
    frame j x factor; 'sat' pads as stable-audio-tools (factor + 1 in total, the larger half on the
    left), which moves the window (factor + 1) // 2 - 1 frames later: one for factors 3 and 4. Both
    give time / factor frames.

    x: (batch, in_channels, time) -> (batch, out_channels, time / factor)
    """

    def __init__(self, in_channels: int, out_channels: int, factor: int, padding: str = "centered"):
        super().__init__()
        if padding not in DOWNSAMPLE_PADDINGS:
            allowed = ", ".join(repr(p) for p in DOWNSAMPLE_PADDINGS)
            raise ValueError(f"model.unet.downsample_padding={padding!r} is unknown; use one of {allowed}")
        total = factor + 1  # kernel - stride
        self.pad = (factor, factor) if padding == "centered" else (total - total // 2, total // 2)
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=2 * factor + 1, stride=factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


class Upsample1d(nn.Module):
    """Transposed conv by an integer factor (kernel 2 x factor), cropped to exactly time x factor;
    factor 1 keeps the length and only changes the width (a kernel-3 conv).

    x: (batch, in_channels, time) -> (batch, out_channels, time x factor)
    """

    def __init__(self, in_channels: int, out_channels: int, factor: int):
        super().__init__()
        self.factor = factor
        if factor == 1:
            self.conv: nn.Module = nn.Conv1d(in_channels, out_channels, kernel_size=3, padding=1)
        else:
            self.conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size=2 * factor, stride=factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.factor == 1:
            return y
        # The transposed conv yields (time + 1) x factor samples; drop factor of them, split
        # between both ends so the output stays centred on the input.
        left = self.factor - self.factor // 2
        return y[..., left : left + x.shape[-1] * self.factor]
