"""Config of the DAC-style VAE (section ``model.autoencoder``), owned by this package.

The defaults are the tiny CPU autoencoder of the embedded demo; ``configs/model/stable_audio_1_0``
sets the paper's sizes (encoder width 128, decoder width 1536, strides [4, 4, 8, 8], 64 latents).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from sa_train.config.fields import param, section


@dataclass
class AutoencoderLossConfig:
    """Loss weights and spectral-loss settings of the autoencoder stage."""

    stft_fft_sizes: List[int] = param(
        [2048, 1024, 512, 256, 128, 64, 32],
        "FFT sizes (samples) of the multi-resolution STFT loss; hop = FFT / 4",
        min=8,
    )
    stft_perceptual_weighting: bool = param(True, "A-weight the STFT magnitudes (perceptual weighting)")
    stft_floor_db: float = param(
        -100.0,
        "soft floor of the STFT magnitudes (dB re full scale, after A-weighting): quieter bins count as silence "
        "in the log-magnitude term. -100 is 16-bit quantisation noise. On sparse spectra (pure tones, the demo's "
        "synthetic clips) nearly every bin is empty, and a floor that low rewards a quieter output; -60 made the "
        "demo's reconstructions more recognisable but let generated silence decode to noise (benchmarks/README.md)",
        max=-40.0,
    )
    waveform_l1_weight: float = param(
        0.0,
        "weight of an L1 loss on the waveform (stable-audio-tools' `time` l1 loss). 0 = the paper's recipe (STFT "
        "and adversarial losses only). The STFT losses see magnitudes only: a silent output of a pure tone gets no "
        "gradient from them, and a waveform term points at the tone. On the demo's tiny VAE, weight 100 made "
        "reconstructions recognisable sooner (kind 0.56 against 0.25 at 700 steps) but quieter, held them back "
        "later, and did not help the demo (benchmarks/README.md, 'Why the demo learns so little')",
        min=0,
    )
    waveform_l1_decay: float = param(
        1.0,
        "the waveform term's weight is waveform_l1_weight x decay^step (stable-audio-tools' `time.decay`, applied "
        "per step); below 1 the term fades and leaves the later steps to the STFT loss (0.996 on the demo's VAE: "
        "benchmarks/README.md)",
        min=0,
        max=1.0,
    )
    mid_side_weight: float = param(1.0, "weight of the STFT loss on mid (L+R) and side (L-R)", min=0)
    left_right_weight: float = param(0.5, "weight of the STFT loss on left and on right each", min=0)
    kl_weight: float = param(1e-4, "weight of the KL term (paper 1e-4; public config 1e-6)", min=0)
    adversarial_weight: float = param(0.1, "weight of the hinge adversarial loss", min=0)
    feature_matching_weight: float = param(5.0, "weight of the L1 feature-matching loss", min=0)
    discriminator_filters: int = param(32, "base filters of each STFT discriminator", min=1)
    discriminator_fft_sizes: List[int] = param(
        [2048, 1024, 512, 256, 128], "FFT sizes (samples) of the multi-scale STFT discriminators", min=8
    )


@dataclass
class AutoencoderConfig:
    """The VAE that compresses audio (channels, samples) to latents (latent_channels, samples / downsampling)."""

    kind: str = param(
        "vae",
        "'vae': DAC-style VAE; 'none': diffusion runs directly on the waveform",
        choices=["vae", "none"],
    )
    audio_channels: int = param(2, "audio channels in and out (2 = stereo)", min=1)
    latent_channels: int = param(16, "latent channels (paper: 64)", min=1)
    encoder_width: int = param(8, "channels of the encoder's first stage; doubles per stride (paper: 128)", min=1)
    decoder_width: int = param(64, "channels of the decoder's first stage; halves per stride (paper: 1536)", min=1)
    strides: List[int] = param(
        [4, 4, 8, 8],
        "encoder downsampling per stage (the decoder mirrors them); product = downsampling factor",
        min=1,
    )
    use_snake: bool = param(True, "Snake activations with learned per-channel alpha (else ELU)")
    final_tanh: bool = param(True, "tanh on the decoder's output")
    layout: str = param(
        "dac",
        "'dac': the Stable Audio 1.0 VAE (encoder ends in a full-width k3 conv and a 1x1 projection to mean + scale); "
        "'oobleck': stable-audio-tools' Oobleck VAE of Stable Audio Open (the encoder's k3 conv goes straight to "
        "mean + scale, and the decoder's output conv has no bias)",
        choices=["dac", "oobleck"],
    )
    channel_multipliers: List[int] = param(
        [],
        "stage widths as multiples of encoder_width (the decoder: decoder_width x these, reversed), one per stride "
        "plus one; empty = double per stride (the paper). Stable Audio Open: [1, 1, 2, 4, 8, 16]",
        min=1,
    )
    snake_beta: bool = param(
        False,
        "with use_snake: SnakeBeta, separate learned log-scale frequency (alpha) and amplitude (beta) per channel, "
        "as stable-audio-tools' Oobleck VAE; false = Snake with one alpha (the paper's DAC VAE)",
    )
    decode_chunk_frames: int = param(
        128, "latent frames per chunk when decoding long audio (bounds memory); 0 = no chunking", min=0
    )
    initial_posterior_std: Optional[float] = param(
        None,
        "std of the posterior at initialisation (the bias of the encoder's scale outputs); None = PyTorch's "
        "default init, a std of about 0.7 that drowns a new encoder's small outputs in sampling noise, so the "
        "decoder first learns to ignore the latents. The demo starts at 0.02",
        min=0.001,
    )
    pretrained: Optional[str] = param(
        None, "exported autoencoder folder (sa-train export) to load for the diffusion stage or encoding"
    )
    losses: AutoencoderLossConfig = section(AutoencoderLossConfig, "training losses of the autoencoder stage")

    @property
    def downsampling(self) -> int:
        """Audio samples per latent frame (1 when there is no autoencoder)."""
        if self.kind == "none":
            return 1
        factor = 1
        for s in self.strides:
            factor *= s
        return factor
