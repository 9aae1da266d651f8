"""Per-example losses of the autoencoder stage: multi-resolution STFT (plain and stereo),
hinge adversarial losses and feature matching. Every loss returns shape (batch,); the caller
reduces.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

# Levels in dB relative to full scale. The STFT is scaled by 1 / sqrt(sum(window^2)), so white
# noise of RMS a has per-bin RMS magnitude a at every FFT size and both levels mean the same thing
# at every resolution.
# FLOOR_DB: every magnitude is sqrt(|X|^2 + floor^2). Bins under the floor count as silence in
# the log term (about 16-bit quantisation noise), so a silent target has a finite log-magnitude
# and the log term's gradient stays bounded, while quiet detail above it is still learned.
FLOOR_DB = -100.0
# CONVERGENCE_REFERENCE_DB: the spectral convergence divides by the target's norm with this level
# added in power, so on a silent or near-silent target (a pause, the padding, the side of a
# dual-mono file) it measures the error against a quiet programme level instead of dividing by
# ~0. Targets well above it (most audio) are unaffected; stable-audio-tools avoids the zero by
# normalising over the whole batch, which a per-example loss cannot do.
CONVERGENCE_REFERENCE_DB = -40.0


def db_to_amplitude(db: float) -> float:
    return 10.0 ** (db / 20.0)


def a_weighting(frequencies: torch.Tensor) -> torch.Tensor:
    """Linear A-weighting gain of each frequency (Hz), normalised to 1 at 1 kHz (IEC 61672).

    frequencies: (bins,) -> (bins,)
    """

    def response(f: torch.Tensor) -> torch.Tensor:
        f2 = f * f
        return (12194.0**2 * f2 * f2) / (
            (f2 + 20.6**2) * torch.sqrt((f2 + 107.7**2) * (f2 + 737.9**2)) * (f2 + 12194.0**2)
        )

    return response(frequencies.double()) / response(torch.tensor(1000.0, dtype=torch.float64))


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + log-magnitude L1 at several FFT sizes (hop FFT/4, Hann window),
    averaged over the resolutions.

    Both terms stay finite, and of the same order as on real audio, when the target is silent or
    very quiet: magnitudes have a soft floor at ``floor_db`` and the spectral convergence's
    denominator includes a level of ``convergence_reference_db`` (see the module constants). A
    perfect prediction scores 0.

    prediction, target: (batch, samples) or (batch, channels, samples) -> (batch,)
    """

    def __init__(self, fft_sizes: Sequence[int], sample_rate: int = 44100, perceptual_weighting: bool = False,
                 floor_db: float = FLOOR_DB, convergence_reference_db: float = CONVERGENCE_REFERENCE_DB) -> None:
        super().__init__()
        if not fft_sizes:
            raise ValueError("model.autoencoder.losses.stft_fft_sizes is empty; give at least one FFT size")
        if convergence_reference_db < floor_db:
            raise ValueError(
                f"convergence_reference_db ({convergence_reference_db}) must be at least floor_db ({floor_db})"
            )
        self.fft_sizes = [int(n) for n in fft_sizes]
        self.sample_rate = sample_rate
        self.perceptual_weighting = perceptual_weighting
        self.floor_power = db_to_amplitude(floor_db) ** 2
        self.reference_power = db_to_amplitude(convergence_reference_db) ** 2

    def spectrum(self, audio: torch.Tensor, n_fft: int) -> torch.Tensor:
        """audio: (rows, samples) -> complex STFT (rows, bins, frames), noise-normalised (white
        noise of RMS a has per-bin RMS magnitude a) and A-weighted if configured. Linear in the
        audio, so the spectrum of a sum of signals is the sum of their spectra."""
        window = torch.hann_window(n_fft, device=audio.device, dtype=audio.dtype)
        spec = torch.stft(audio, n_fft, hop_length=n_fft // 4, window=window, center=True,
                          pad_mode="constant", return_complex=True)
        gain = window.square().sum().rsqrt()
        if self.perceptual_weighting:
            bins = torch.linspace(0, self.sample_rate / 2, n_fft // 2 + 1, device=audio.device)
            return spec * (gain * a_weighting(bins).to(audio.dtype))[:, None]
        return spec * gain

    def distance(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Spectral convergence + log-magnitude L1 of one resolution.

        prediction, target: spectra of :meth:`spectrum`, (batch, ...) -> (batch,)
        """
        batch = prediction.shape[0]
        # Power, not magnitude: sqrt has no finite gradient at an exactly silent bin.
        pred_power = (prediction.real.square() + prediction.imag.square()).reshape(batch, -1)
        true_power = (target.real.square() + target.imag.square()).reshape(batch, -1)
        # Soft floor: every magnitude is > 0, so sqrt and log have finite gradients at silence.
        pred_mag = (pred_power + self.floor_power).sqrt()
        true_mag = (true_power + self.floor_power).sqrt()
        # Spectral convergence: relative error of the magnitudes (loud parts dominate); the
        # reference level stands in for the target's when the target is near silent.
        level = (true_power.sum(dim=1) + true_power.shape[1] * self.reference_power).sqrt()
        convergence = torch.linalg.vector_norm(true_mag - pred_mag, dim=1) / level
        # Log-magnitude L1: every bin above the floor counts, so quiet detail is learned too.
        log_distance = (true_mag.log() - pred_mag.log()).abs().mean(dim=1)
        return convergence + log_distance

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
        batch = prediction.shape[0]
        # STFTs in float32 (half precision loses the quiet bins the log term is about), prediction
        # and target in one call.
        both = torch.cat([prediction, target]).reshape(-1, prediction.shape[-1]).float()
        total = prediction.new_zeros(batch, dtype=torch.float32)
        for n_fft in self.fft_sizes:
            pred, true = self.spectrum(both, n_fft).chunk(2)
            total = total + self.distance(pred.reshape(batch, -1), true.reshape(batch, -1))
        return total / len(self.fft_sizes)


class StereoSTFTLoss(nn.Module):
    """The STFT loss of the paper for stereo: on mid (L+R) and side (L-R), weight ``mid_side_weight``
    on their mean, plus on left and on right with ``left_right_weight`` each. Any other channel
    count gets the plain loss averaged over its channels.

    prediction, target: (batch, channels, samples) -> (batch,)
    """

    def __init__(self, fft_sizes: Sequence[int], sample_rate: int = 44100, perceptual_weighting: bool = False,
                 mid_side_weight: float = 1.0, left_right_weight: float = 0.5, floor_db: float = FLOOR_DB) -> None:
        super().__init__()
        self.stft = MultiResolutionSTFTLoss(fft_sizes, sample_rate, perceptual_weighting, floor_db=floor_db)
        self.mid_side_weight = mid_side_weight
        self.left_right_weight = left_right_weight

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if prediction.dim() != 3:
            raise ValueError(f"expected audio of shape (batch, channels, samples), got {tuple(prediction.shape)}")
        if prediction.shape[1] != 2:
            return self.stft(prediction, target)
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
        batch, samples = prediction.shape[0], prediction.shape[-1]
        # The STFT is linear: the spectra of mid (L+R) and side (L-R) are sums and differences of
        # those of left and right, so four STFTs per resolution serve all eight signals.
        both = torch.cat([prediction, target]).reshape(-1, samples).float()
        distance = self.stft.distance
        total = prediction.new_zeros(batch, dtype=torch.float32)
        for n_fft in self.stft.fft_sizes:
            spectra = self.stft.spectrum(both, n_fft)
            (pl, pr), (tl, tr) = (s.unbind(1) for s in spectra.reshape(2, batch, 2, *spectra.shape[1:]))
            mid_side = 0.5 * (distance(pl + pr, tl + tr) + distance(pl - pr, tl - tr))
            left_right = distance(pl, tl) + distance(pr, tr)
            total = total + self.mid_side_weight * mid_side + self.left_right_weight * left_right
        return total / len(self.stft.fft_sizes)


def _per_example_mean(x: torch.Tensor) -> torch.Tensor:
    """(batch, ...) -> (batch,)"""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def hinge_discriminator_loss(real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Hinge loss of the discriminator, summed over scales: relu(1 - D(real)) + relu(1 + D(fake)).

    real_logits, fake_logits: one (batch, ...) tensor per scale -> (batch,)
    """
    losses = [
        _per_example_mean(torch.relu(1 - real)) + _per_example_mean(torch.relu(1 + fake))
        for real, fake in zip(real_logits, fake_logits, strict=True)
    ]
    return torch.stack(losses).sum(dim=0)


def hinge_generator_loss(fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Generator side of the hinge GAN, summed over scales: -D(fake) (unbounded below, as the reference).

    fake_logits: one (batch, ...) tensor per scale -> (batch,)
    """
    return torch.stack([-_per_example_mean(fake) for fake in fake_logits]).sum(dim=0)


def feature_matching_loss(real_features: Sequence[Sequence[torch.Tensor]],
                          fake_features: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """L1 between the discriminator's feature maps on real and on fake audio: mean over the layers
    of a scale, summed over scales.

    real_features, fake_features: per scale, per layer a (batch, ...) tensor -> (batch,)
    """
    per_scale = []
    for real_maps, fake_maps in zip(real_features, fake_features, strict=True):
        distances = [_per_example_mean((r - f).abs()) for r, f in zip(real_maps, fake_maps, strict=True)]
        per_scale.append(torch.stack(distances).mean(dim=0))
    return torch.stack(per_scale).sum(dim=0)


__all__ = [
    "MultiResolutionSTFTLoss",
    "StereoSTFTLoss",
    "a_weighting",
    "feature_matching_loss",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
]
