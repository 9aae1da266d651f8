"""The DAC-style VAE of Stable Audio: a convolutional encoder to a Gaussian posterior over latents,
and a convolutional decoder back to audio.

    audio (batch, audio_channels, samples)
      -> Encoder -> (batch, 2 * latent_channels, samples / downsampling) = mean, scale
      -> VAEBottleneck -> latents (batch, latent_channels, samples / downsampling), KL (batch,)
      -> Decoder -> audio (batch, audio_channels, samples)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from sa_train.models.autoencoder.blocks import DecoderBlock, EncoderBlock, activation, wn_conv1d
from sa_train.models.autoencoder.config import AutoencoderConfig

logger = logging.getLogger(__name__)


def stage_widths(width: int, stages: int, multipliers: Sequence[int], halve: bool = False) -> list[int]:
    """Channels of the ``stages + 1`` stages: ``width`` x multipliers, or doubling (halving) per stage."""
    if multipliers:
        if len(multipliers) != stages + 1:
            raise ValueError(
                f"model.autoencoder.channel_multipliers has {len(multipliers)} entries; it needs one per stride "
                f"plus one ({stages + 1})"
            )
        return [width * m for m in (reversed(multipliers) if halve else multipliers)]
    return [width // 2**i if halve else width * 2**i for i in range(stages + 1)]


class Encoder(nn.Module):
    """Audio to posterior parameters (mean and scale stacked on the channel axis).

    audio: (batch, audio_channels, samples) -> (batch, 2 * latent_channels, samples / prod(strides))
    """

    def __init__(self, audio_channels: int, width: int, strides: Sequence[int], latent_channels: int,
                 use_snake: bool = True, *, multipliers: Sequence[int] = (), layout: str = "dac",
                 snake_beta: bool = False) -> None:
        super().__init__()
        widths = stage_widths(width, len(strides), multipliers)
        # Input conv: lift the waveform to the first stage's width.
        self.input_conv = wn_conv1d(audio_channels, widths[0], 7)
        # Strided blocks: each divides time by its stride and changes the channels (doubles by default).
        self.blocks = nn.Sequential(
            *[EncoderBlock(widths[i], widths[i + 1], s, use_snake, snake_beta) for i, s in enumerate(strides)]
        )
        self.output_activation = activation(widths[-1], use_snake, snake_beta)
        if layout == "oobleck":
            # Oobleck: the k3 conv goes straight to mean + scale.
            self.output_conv = wn_conv1d(widths[-1], 2 * latent_channels, 3)
            self.projection: nn.Module = nn.Identity()
        else:
            # k3 conv at full width, then a 1x1 projection to mean + scale: the reference model's layout
            # (a DAC encoder whose output conv keeps its width, plus a projection); the k3 conv holds
            # about 12.6M of the paper-sized encoder's 89.6M parameters.
            self.output_conv = wn_conv1d(widths[-1], widths[-1], 3)
            self.projection = wn_conv1d(widths[-1], 2 * latent_channels, 1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.input_conv(audio))
        return self.projection(self.output_conv(self.output_activation(x)))


class Decoder(nn.Module):
    """Latents to audio, mirroring the encoder's strides in reverse order.

    latents: (batch, latent_channels, frames) -> (batch, audio_channels, frames * prod(strides))
    """

    def __init__(self, latent_channels: int, width: int, strides: Sequence[int], audio_channels: int,
                 use_snake: bool = True, final_tanh: bool = True, *, multipliers: Sequence[int] = (),
                 layout: str = "dac", snake_beta: bool = False) -> None:
        super().__init__()
        upsampling = list(reversed(strides))
        widths = stage_widths(width, len(upsampling), multipliers, halve=True)
        if widths[-1] < 1:
            raise ValueError(
                f"model.autoencoder.decoder_width={width} is too small to halve {len(upsampling)} times; "
                f"use at least {2 ** len(upsampling)}"
            )
        self.upsampling = upsampling
        # Input conv: lift the latents to the widest stage.
        self.input_conv = wn_conv1d(latent_channels, widths[0], 7)
        # Upsampling blocks: each multiplies time by its stride and changes the channels (halves by default).
        self.blocks = nn.Sequential(
            *[DecoderBlock(widths[i], widths[i + 1], s, use_snake, snake_beta) for i, s in enumerate(upsampling)]
        )
        self.output_activation = activation(widths[-1], use_snake, snake_beta)
        # Output conv to the audio channels (Oobleck's has no bias); tanh keeps the waveform in [-1, 1].
        self.output_conv = wn_conv1d(widths[-1], audio_channels, 7, bias=layout != "oobleck")
        self.final_tanh = final_tanh

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        x = self.output_conv(self.output_activation(self.blocks(self.input_conv(latents))))
        return torch.tanh(x) if self.final_tanh else x

    def context_frames(self) -> int:
        """Latent frames on each side that can influence an output sample (a safe upper bound).

        Walks the layers from the output back to the input, growing the radius (in samples of
        each layer's input rate) by each conv's half-width; chunked decoding with this much
        overlap reproduces the full decode.
        """
        radius = 3  # output conv, k7
        for stride in reversed(self.upsampling):
            radius += 3 * (1 + 3 + 9)  # the residual units' k7 convs, dilations 1, 3, 9
            padding = -(-stride // 2)
            # Transposed conv, kernel 2*stride: an output depends on the inputs within
            # (radius + padding) / stride, plus up to two for the kernel's overlap.
            radius = -(-(radius + padding) // stride) + 2
        return radius + 3  # input conv, k7


class VAEBottleneck(nn.Module):
    """Gaussian posterior from (mean, scale): samples latents and computes the KL to N(0, I).

    params: (batch, 2 * latent_channels, frames) -> latents (batch, latent_channels, frames), kl (batch,)
    """

    def forward(self, params: torch.Tensor, sample: bool = True,
                generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``generator`` (on params' device) draws the posterior noise; None uses the global RNG."""
        mean, scale = params.chunk(2, dim=1)
        # softplus keeps the std positive and smooth; the floor keeps log(var) finite.
        std = F.softplus(scale) + 1e-4
        var = std * std
        kl = 0.5 * (mean * mean + var - torch.log(var) - 1).sum(dim=1).mean(dim=-1)
        if not sample:
            return mean, kl
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * noise, kl


@dataclass
class AutoencoderOutput:
    """What one forward pass of the VAE returns.

    reconstruction: (batch, audio_channels, samples); latents: (batch, latent_channels, frames);
    kl: (batch,) KL divergence per example (summed over channels, averaged over frames).
    """

    reconstruction: torch.Tensor
    latents: torch.Tensor
    kl: torch.Tensor


class AutoencoderVAE(nn.Module):
    """The VAE of ``model.autoencoder`` (kind 'vae')."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        if cfg.kind != "vae":
            raise ValueError(
                f"AutoencoderVAE needs model.autoencoder.kind=vae, got {cfg.kind!r} "
                "(with kind=none there is no autoencoder to build)"
            )
        self.cfg = cfg
        self.audio_channels = cfg.audio_channels
        self._latent_channels = cfg.latent_channels
        self._downsampling = cfg.downsampling
        layout = {"multipliers": cfg.channel_multipliers, "layout": cfg.layout, "snake_beta": cfg.snake_beta}
        self.encoder = Encoder(
            cfg.audio_channels, cfg.encoder_width, cfg.strides, cfg.latent_channels, cfg.use_snake, **layout
        )
        self.bottleneck = VAEBottleneck()
        self.decoder = Decoder(
            cfg.latent_channels, cfg.decoder_width, cfg.strides, cfg.audio_channels, cfg.use_snake, cfg.final_tanh,
            **layout,
        )
        if cfg.initial_posterior_std is not None:
            self._start_posterior_at(cfg.initial_posterior_std)

    @torch.no_grad()
    def _start_posterior_at(self, std: float) -> None:
        """Set the bias of the scale half of the encoder's last layer so the posterior starts with
        this std everywhere (softplus(bias) + 1e-4 = std), instead of about 0.7."""
        head = self.encoder.output_conv if isinstance(self.encoder.projection, nn.Identity) else self.encoder.projection
        head.bias[self._latent_channels:] = math.log(math.expm1(std - 1e-4))

    @property
    def downsampling(self) -> int:
        """Audio samples per latent frame."""
        return self._downsampling

    @property
    def latent_channels(self) -> int:
        return self._latent_channels

    def _check_audio(self, audio: torch.Tensor) -> None:
        if audio.dim() != 3 or audio.shape[1] != self.audio_channels:
            raise ValueError(
                f"audio must have shape (batch, {self.audio_channels}, samples) "
                f"(model.autoencoder.audio_channels={self.audio_channels}), got {tuple(audio.shape)}"
            )
        length, ds = audio.shape[-1], self.downsampling
        if length == 0 or length % ds != 0:
            below, above = (length // ds) * ds, (length // ds + 1) * ds
            nearest = f"{below} or {above}" if below > 0 else f"{above}"
            raise ValueError(
                f"audio length {length} samples is not a multiple of the autoencoder downsampling {ds} "
                f"(product of model.autoencoder.strides); pad or crop to {nearest} samples"
            )

    def encode_with_kl(self, audio: torch.Tensor, sample: bool = True,
                       generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """audio: (batch, audio_channels, samples) -> latents (batch, latent_channels, samples / downsampling), kl (batch,)."""
        self._check_audio(audio)
        return self.bottleneck(self.encoder(audio), sample=sample, generator=generator)

    def encode(self, audio: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """audio: (batch, audio_channels, samples) -> latents (batch, latent_channels, samples / downsampling).

        Deterministic (the posterior mean) unless ``sample`` is true.
        """
        return self.encode_with_kl(audio, sample=sample)[0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents: (batch, latent_channels, frames) -> audio (batch, audio_channels, frames * downsampling)."""
        if latents.dim() != 3 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"latents must have shape (batch, {self.latent_channels}, frames) "
                f"(model.autoencoder.latent_channels={self.latent_channels}), got {tuple(latents.shape)}"
            )
        return self.decoder(latents)

    def decode_chunked(self, latents: torch.Tensor, chunk_frames: Optional[int] = None,
                       overlap_frames: Optional[int] = None) -> torch.Tensor:
        """Decode in chunks of ``chunk_frames`` latent frames, each with ``overlap_frames`` of context
        on either side that is decoded and then cropped away, so memory is bounded by the chunk size.

        With the default overlap (the decoder's receptive field, ``decoder.context_frames()``) the
        result equals :meth:`decode` up to float rounding. Meant for inference: call it under
        ``torch.no_grad()``, or every chunk's activations are kept for backward.

        latents: (batch, latent_channels, frames) -> audio (batch, audio_channels, frames * downsampling)
        """
        chunk = self.cfg.decode_chunk_frames if chunk_frames is None else chunk_frames
        overlap = self.decoder.context_frames() if overlap_frames is None else overlap_frames
        if chunk < 0 or overlap < 0:
            raise ValueError(f"chunk_frames ({chunk}) and overlap_frames ({overlap}) must be >= 0")
        frames = latents.shape[-1]
        if chunk == 0 or frames <= chunk:
            return self.decode(latents)
        ds = self.downsampling
        logger.debug("decoding %d latent frames in chunks of %d with %d frames of context", frames, chunk, overlap)
        output: Optional[torch.Tensor] = None
        for start in range(0, frames, chunk):
            end = min(start + chunk, frames)
            lo, hi = max(0, start - overlap), min(frames, end + overlap)
            audio = self.decode(latents[..., lo:hi])
            if output is None:
                output = audio.new_empty(audio.shape[0], audio.shape[1], frames * ds)
            # Keep only the samples of [start, end): their context was fully inside the window.
            output[..., start * ds:end * ds] = audio[..., (start - lo) * ds:(end - lo) * ds]
        assert output is not None
        return output

    def forward(self, audio: torch.Tensor, sample: Optional[bool] = None,
                generator: Optional[torch.Generator] = None) -> AutoencoderOutput:
        """audio: (batch, audio_channels, samples) -> reconstruction, latents and KL.

        ``sample=None`` samples the posterior in training mode and takes its mean in eval mode;
        ``generator`` draws the posterior noise (the trainer passes each rank's own stream).
        """
        latents, kl = self.encode_with_kl(audio, sample=self.training if sample is None else sample,
                                          generator=generator)
        return AutoencoderOutput(reconstruction=self.decode(latents), latents=latents, kl=kl)
