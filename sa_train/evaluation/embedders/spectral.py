"""Built-in embedder and tagger that need no downloads: PROXIES, not OpenL3 or PaSST.

They give the demo and tiny sweeps an FD and a KL on this machine. Their numbers are not
comparable with the paper's FD_openl3 / KL_passt, only with each other (same settings).

- ``spectral``: per 1 s window (0.5 s hop, as OpenL3 in the paper), the mean and standard
  deviation over time of each log-mel band; left and right channels concatenated, mono
  duplicated. 32 bands -> 128 dimensions.
- ``synth_kind``: probabilities of the synthetic dataset's four kinds (tone, chord, noise,
  drums) from five spectral and level features scored against hand-set class prototypes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sa_train.evaluation.audio import as_channels, resample, to_mono
from sa_train.evaluation.timing import frame_rms_db


# About 90 dB under a full-scale sine in these units, near the 16-bit noise floor: digital silence
# and dither look alike instead of silence sitting 60 dB further down and dominating the FD.
_POWER_FLOOR = 1e-4


class SpectralEmbedder:
    """Log-mel band statistics per window: ``embed(audio (channels, samples), sr) -> (windows, 4 * n_mels)``."""

    name = "spectral"

    def __init__(self, sample_rate: int = 22050, n_mels: int = 32, n_fft: int = 2048, hop_length: int = 512,
                 window_seconds: float = 1.0, hop_seconds: float = 0.5):
        if window_seconds <= 0 or hop_seconds <= 0:
            raise ValueError(f"window_seconds ({window_seconds}) and hop_seconds ({hop_seconds}) must be positive")
        self.sample_rate = sample_rate
        # "version" changes whenever the numbers change, so old cached reference stats are not reused.
        self.settings: dict[str, Any] = {
            "version": 1, "sample_rate": sample_rate, "n_mels": n_mels, "n_fft": n_fft, "hop_length": hop_length,
            "window_seconds": window_seconds, "hop_seconds": hop_seconds,
        }
        self._mel = None

    def _log_mel(self, audio: np.ndarray) -> np.ndarray:
        """``audio: (channels, samples)`` at ``sample_rate`` -> ``(channels, n_mels, frames)`` in dB."""
        import torch
        import torchaudio

        if self._mel is None:
            s = self.settings
            self._mel = torchaudio.transforms.MelSpectrogram(
                sample_rate=self.sample_rate, n_fft=s["n_fft"], hop_length=s["hop_length"], n_mels=s["n_mels"], power=2.0
            )
        with torch.no_grad():
            power = self._mel(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)))
        return 10.0 * np.log10(power.double().numpy() + _POWER_FLOOR)

    def embed(self, audio: np.ndarray, sr: int) -> np.ndarray:
        x = as_channels(audio)
        if x.shape[0] == 1:
            x = np.repeat(x, 2, axis=0)
        elif x.shape[0] != 2:
            raise ValueError(f"the spectral embedder takes mono or stereo audio; got {x.shape[0]} channels")
        x = resample(x, sr, self.sample_rate)
        log_mel = self._log_mel(x)
        s = self.settings
        frames_per_second = self.sample_rate / s["hop_length"]
        window = max(1, int(round(s["window_seconds"] * frames_per_second)))
        # Windows that fit inside the clip, placed in seconds (k * hop_seconds) so that frame
        # rounding never drops the last one; a clip shorter than a window is one shorter window.
        seconds = x.shape[1] / self.sample_rate
        count = max(1, math.floor((seconds - s["window_seconds"]) / s["hop_seconds"] + 1e-6) + 1)
        starts = [int(round(k * s["hop_seconds"] * frames_per_second)) for k in range(count)]
        rows = []
        for start in starts:
            chunk = log_mel[:, :, start : start + window]
            stats = np.concatenate([chunk.mean(axis=-1), chunk.std(axis=-1)], axis=-1)  # (2, 2 * n_mels)
            rows.append(stats.reshape(-1))
        return np.stack(rows).astype(np.float64)


# Class prototypes of the synth_kind tagger: (mean, spread) per feature, per class. Features:
#   log10 spectral flatness (tonal ~ -4, white noise ~ -0.3)
#   log10 count of spectral peaks within 20 dB of the strongest (noise: ~100)
#   fraction of those peaks at integer multiples of the lowest (tone ~ 1, chord ~ 1/3)
#   level slope over the clip in dB/s / 10 (the chord decays at ~13 dB/s)
#   median level change between consecutive loud 20 ms frames, dB (version 2): drum hits decay
#   by 3.4-5.1 dB per frame, a noise burst holds its level (0.1-2.3), a tone too (0-1.3), a
#   chord's partials beat (0.3-2.6). Unlike the spectral peaks, it does not move when the
#   kick is thinner: with the first four alone, the data's own drum patterns read as noise
#   after a 7 dB cut below 200 Hz (16 of 16), the cut the demo's VAE makes in its
#   reconstructions (benchmarks/README.md).
# Set by hand from the generator's recipe (sa_train.data.synth) and checked on its files, raw and
# equalised, attenuated or over a noise floor (tests/evaluation/test_embedders.py).
KIND_CLASSES = ("tone", "chord", "noise", "drums")
_PROTOTYPES = np.array([
    [[-4.0, 0.7], [0.6, 0.4], [1.0, 0.25], [-0.2, 0.3], [0.1, 0.5]],  # tone
    [[-4.0, 0.7], [0.78, 0.3], [0.33, 0.15], [-1.3, 0.3], [0.7, 0.5]],  # chord
    [[-0.6, 0.5], [2.0, 0.15], [0.2, 0.3], [0.0, 4.0], [0.7, 0.6]],  # noise
    [[-0.8, 0.6], [0.8, 0.3], [0.25, 0.2], [-1.5, 2.5], [4.0, 0.6]],  # drums
])
_SMOOTHING = 0.02  # mixed-in uniform mass: a wrong guess costs a few nats of KL, not ~23


def kind_features(audio: np.ndarray, sr: int) -> np.ndarray:
    """``audio: (channels, samples)`` -> the tagger's 5 features (see ``_PROTOTYPES``)."""
    x = to_mono(audio).astype(np.float64)
    n_fft, hop = 2048, 512
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, (0, n_fft)), n_fft)[::hop]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2 + 1e-12
    energy = power.sum(axis=1)
    active = power[energy > energy.max() * 1e-3]
    flatness = float(np.median(np.exp(np.log(active).mean(axis=1)) / active.mean(axis=1)))

    freqs = np.arange(power.shape[1]) * sr / n_fft
    db = 10 * np.log10(active.mean(axis=0))
    band = (freqs > 40) & (freqs < 5000)
    inner = db[1:-1]
    peaks = np.flatnonzero((inner > db[:-2]) & (inner >= db[2:]) & (inner > db[band].max() - 20)) + 1
    peaks = peaks[band[peaks]]
    harmonic = 0.0
    if peaks.size:
        ratios = freqs[peaks] / freqs[peaks[0]]
        harmonic = float(np.mean(np.abs(ratios - np.round(ratios)) < 0.06))

    levels = frame_rms_db(x, sr, 0.05)
    loud = np.flatnonzero(levels > levels.max() - 30)
    span = levels[loud[0] : loud[-1] + 1]
    slope = float(np.polyfit(np.arange(span.size) * 0.05, span, 1)[0]) if span.size > 2 else 0.0

    fine = frame_rms_db(x, sr, 0.02)
    loud = fine > fine.max() - 25
    steps = np.abs(np.diff(fine))[loud[1:] & loud[:-1]]
    flux = float(np.median(steps)) if steps.size else 0.0
    return np.array([math.log10(flatness + 1e-4), math.log10(max(peaks.size, 1)), harmonic, slope / 10, flux])


class SynthKindTagger:
    """Probabilities of the synthetic dataset's kinds: ``class_probabilities(audio, sr) -> (4,)``.

    Gaussian scores of the features against each class's prototype, softmaxed and smoothed.
    Silence (peak under 1e-4) gets the uniform distribution.
    """

    name = "synth_kind"
    classes = KIND_CLASSES

    def __init__(self, sample_rate: int = 22050):
        self.sample_rate = sample_rate
        self.settings: dict[str, Any] = {"version": 2, "sample_rate": sample_rate, "smoothing": _SMOOTHING}

    def class_probabilities(self, audio: np.ndarray, sr: int) -> np.ndarray:
        x = as_channels(audio)
        uniform = np.full(len(KIND_CLASSES), 1.0 / len(KIND_CLASSES))
        if x.size == 0 or np.abs(x).max() < 1e-4:
            return uniform
        features = kind_features(resample(x, sr, self.sample_rate), self.sample_rate)
        z = (features[None, :] - _PROTOTYPES[:, :, 0]) / _PROTOTYPES[:, :, 1]
        logits = -0.5 * (z**2).sum(axis=1)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        return (1 - _SMOOTHING) * probs + _SMOOTHING * uniform
