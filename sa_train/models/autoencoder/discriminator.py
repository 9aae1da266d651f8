"""EnCodec-style multi-scale STFT discriminator: one 2D conv network per FFT size, each looking
at the complex spectrogram (real and imaginary parts as channels) of the audio.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

# (time, frequency) kernel of the 2D convs; the frequency axis is wide and strided, the time
# axis narrow and dilated.
KERNEL = (3, 9)
DILATIONS = (1, 2, 4)


def _wn_conv2d(in_channels: int, out_channels: int, kernel: tuple[int, int], *,
               stride: tuple[int, int] = (1, 1), dilation: tuple[int, int] = (1, 1)) -> nn.Module:
    """Weight-normalised Conv2d with "same" padding for odd kernels."""
    padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    return weight_norm(nn.Conv2d(in_channels, out_channels, kernel, stride=stride, dilation=dilation, padding=padding))


class STFTDiscriminator(nn.Module):
    """Discriminator on the complex STFT at one resolution (hop n_fft/4, Hann window).

    audio: (batch, channels, samples) -> logits (batch, 1, frames, bins'), features: list of
    (batch, filters, frames, bins_i), one per conv layer before the output conv.
    """

    def __init__(self, audio_channels: int, n_fft: int, filters: int = 32) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        time_kernel = (KERNEL[0], KERNEL[0])
        self.convs = nn.ModuleList(
            # Input conv: real and imaginary parts of every audio channel in.
            [_wn_conv2d(2 * audio_channels, filters, KERNEL)]
            # Dilated convs: widen the time context (dilations 1, 2, 4) while halving frequency.
            + [_wn_conv2d(filters, filters, KERNEL, stride=(1, 2), dilation=(d, 1)) for d in DILATIONS]
            # A last square conv mixes neighbouring frames and bins before the logits.
            + [_wn_conv2d(filters, filters, time_kernel)]
        )
        self.activation = nn.LeakyReLU(0.2)
        self.output_conv = _wn_conv2d(filters, 1, time_kernel)

    def spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """audio: (batch, channels, samples) -> (batch, 2 * channels, frames, bins)"""
        batch, channels, samples = audio.shape
        spec = torch.stft(
            audio.reshape(batch * channels, samples).float(), self.n_fft, hop_length=self.n_fft // 4,
            window=self.window.float(), normalized=True, center=True, pad_mode="constant", return_complex=True,
        )
        spec = torch.view_as_real(spec)  # (batch * channels, bins, frames, 2)
        spec = spec.reshape(batch, channels, spec.shape[1], spec.shape[2], 2)
        # Channel order: real and imaginary part of each audio channel; then time before frequency.
        return spec.permute(0, 1, 4, 3, 2).reshape(batch, 2 * channels, spec.shape[3], spec.shape[2])

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.spectrogram(audio).to(self.output_conv.bias.dtype)
        features = []
        for conv in self.convs:
            x = self.activation(conv(x))
            features.append(x)
        return self.output_conv(x), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """One :class:`STFTDiscriminator` per FFT size.

    audio: (batch, audio_channels, samples) -> (logits per scale, feature maps per scale)
    """

    def __init__(self, audio_channels: int, fft_sizes: Sequence[int] = (2048, 1024, 512, 256, 128),
                 filters: int = 32) -> None:
        super().__init__()
        if not fft_sizes:
            raise ValueError(
                "model.autoencoder.losses.discriminator_fft_sizes is empty; give at least one FFT size"
            )
        self.audio_channels = audio_channels
        self.discriminators = nn.ModuleList(STFTDiscriminator(audio_channels, int(n), filters) for n in fft_sizes)

    def forward(self, audio: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        if audio.dim() != 3 or audio.shape[1] != self.audio_channels:
            raise ValueError(
                f"the discriminator expects audio of shape (batch, {self.audio_channels}, samples), "
                f"got {tuple(audio.shape)}"
            )
        logits, features = [], []
        for discriminator in self.discriminators:
            scale_logits, scale_features = discriminator(audio)
            logits.append(scale_logits)
            features.append(scale_features)
        return logits, features
