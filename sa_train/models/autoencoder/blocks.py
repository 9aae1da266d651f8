"""Building blocks of the DAC-style VAE: Snake, weight-normalised convolutions, residual units,
and the strided encoder / decoder blocks.

Every convolution keeps the time length (odd kernels with "same" padding) except the strided
ones, which change it by exactly ``stride`` for any length that is a multiple of the stride; the
VAE relies on that to map ``samples`` to ``samples / downsampling`` and back without cropping.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class Snake(nn.Module):
    """Snake activation ``x + 1/alpha * sin(alpha x)^2`` with a learned alpha per channel.

    A periodic inductive bias that suits audio better than ReLU-like activations (DAC, BigVGAN).

    x: (batch, channels, time) -> (batch, channels, time)
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The 1e-9 keeps the reciprocal finite if an alpha is driven to zero.
        inverse = (self.alpha + 1e-9).reciprocal()
        if _building_graph(x, self.alpha):
            return x + inverse * torch.sin(self.alpha * x).pow(2)
        return (self.alpha * x).sin_().square_().mul_(inverse).add_(x)


class SnakeBeta(nn.Module):
    """SnakeBeta ``x + 1/beta * sin(alpha x)^2`` with a learned frequency alpha and amplitude beta per
    channel, both stored as logarithms (zero = 1): stable-audio-tools' Oobleck VAE (after BigVGAN).

    x: (batch, channels, time) -> (batch, channels, time)
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.exp()[None, :, None]
        beta = self.beta.exp()[None, :, None]
        if _building_graph(x, self.alpha, self.beta):
            return x + (1.0 / (beta + 1e-9)) * torch.sin(x * alpha) ** 2
        return (x * alpha).sin_().square_().mul_(1.0 / (beta + 1e-9)).add_(x)


def _building_graph(*tensors: torch.Tensor) -> bool:
    """Whether autograd records this call. Without a graph (encoding, decoding, sampling) the Snakes
    compute the same expression in place, in one buffer instead of five: the same values bit for
    bit, and the demo's decode in 0.62x the time on a CPU (benchmarks/bench_snake.py)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def activation(channels: int, use_snake: bool, snake_beta: bool = False) -> nn.Module:
    """Snake (the paper), SnakeBeta (Oobleck) or ELU (a cheaper fallback for ablations)."""
    if not use_snake:
        return nn.ELU()
    return SnakeBeta(channels) if snake_beta else Snake(channels)


def wn_conv1d(in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
              dilation: int = 1, padding: int | None = None, bias: bool = True) -> nn.Module:
    """Weight-normalised Conv1d; ``padding=None`` means "same" padding for an odd kernel."""
    if padding is None:
        assert kernel_size % 2 == 1, "same padding needs an odd kernel"
        padding = dilation * (kernel_size - 1) // 2
    conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, padding=padding,
                     bias=bias)
    return weight_norm(conv)


def wn_conv_transpose1d(in_channels: int, out_channels: int, kernel_size: int, *, stride: int,
                        padding: int, output_padding: int = 0) -> nn.Module:
    """Weight-normalised ConvTranspose1d."""
    conv = nn.ConvTranspose1d(
        in_channels, out_channels, kernel_size, stride=stride, padding=padding, output_padding=output_padding
    )
    return weight_norm(conv)


class ResidualUnit(nn.Module):
    """Snake -> dilated conv (k7) -> Snake -> 1x1 conv, added to the input.

    x: (batch, channels, time) -> (batch, channels, time)
    """

    def __init__(self, channels: int, dilation: int, use_snake: bool = True, snake_beta: bool = False) -> None:
        super().__init__()
        self.dilation = dilation
        self.block = nn.Sequential(
            activation(channels, use_snake, snake_beta),
            # Dilated k7 conv: widens the receptive field (1, 3, 9 across the three units of a block).
            wn_conv1d(channels, channels, 7, dilation=dilation),
            activation(channels, use_snake, snake_beta),
            # 1x1 conv: mixes channels at no cost in receptive field.
            wn_conv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def residual_stack(channels: int, use_snake: bool, snake_beta: bool = False) -> list[nn.Module]:
    """The three residual units (dilations 1, 3, 9) used at every resolution."""
    return [ResidualUnit(channels, d, use_snake, snake_beta) for d in (1, 3, 9)]


def check_stride(stride: int) -> None:
    """Strided blocks need stride >= 2 (a stride of 1 would not change the length and breaks the padding rule)."""
    if stride < 2:
        raise ValueError(
            f"model.autoencoder.strides contains {stride}; every stride must be >= 2 "
            "(remove stages with stride 1: they add no downsampling)"
        )


class EncoderBlock(nn.Module):
    """Residual units at ``in_channels``, then a strided conv to ``out_channels`` (time / stride).

    x: (batch, in_channels, time) -> (batch, out_channels, time / stride)
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, use_snake: bool = True,
                 snake_beta: bool = False) -> None:
        super().__init__()
        check_stride(stride)
        self.stride = stride
        self.block = nn.Sequential(
            # Residual units: local features at the current resolution.
            *residual_stack(in_channels, use_snake, snake_beta),
            activation(in_channels, use_snake, snake_beta),
            # Strided conv, kernel 2*stride: downsamples with overlapping windows; padding
            # ceil(stride/2) gives exactly time / stride outputs for any multiple of the stride.
            wn_conv1d(in_channels, out_channels, 2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DecoderBlock(nn.Module):
    """Transposed conv from ``in_channels`` to ``out_channels`` (time * stride), then residual units.

    x: (batch, in_channels, time) -> (batch, out_channels, time * stride)
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, use_snake: bool = True,
                 snake_beta: bool = False) -> None:
        super().__init__()
        check_stride(stride)
        self.stride = stride
        self.block = nn.Sequential(
            activation(in_channels, use_snake, snake_beta),
            # Transposed conv, kernel 2*stride: upsamples; the padding / output_padding pair gives
            # exactly time * stride outputs for odd strides too.
            wn_conv_transpose1d(
                in_channels, out_channels, 2 * stride, stride=stride,
                padding=math.ceil(stride / 2), output_padding=stride % 2,
            ),
            # Residual units: refine detail at the new, higher resolution.
            *residual_stack(out_channels, use_snake, snake_beta),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)
