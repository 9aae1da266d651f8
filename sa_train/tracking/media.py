"""Pictures and sounds for people: spectrogram PNGs, loss-curve PNGs and WAV files."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import soundfile as sf


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on training nodes
    import matplotlib.pyplot as plt

    return plt


def log_magnitude_spectrogram(audio: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """audio: (channels, samples) or (samples,) -> dB magnitude (freq bins, frames) of the channel mean."""
    mono = audio.mean(axis=0) if audio.ndim == 2 else audio
    if mono.shape[0] < n_fft:
        mono = np.pad(mono, (0, n_fft - mono.shape[0]))
    frames = 1 + (mono.shape[0] - n_fft) // hop
    window = np.hanning(n_fft).astype(np.float32)
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spectrum = np.abs(np.fft.rfft(mono[index] * window, axis=-1)).T
    return 20 * np.log10(np.maximum(spectrum, 1e-5))


def write_spectrogram_png(audio: np.ndarray, sample_rate: int, path: Path, title: str = "") -> Path:
    plt = _pyplot()
    spec = log_magnitude_spectrogram(audio)
    seconds = audio.shape[-1] / sample_rate
    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=spec.max() - 80, vmax=spec.max(),
              extent=(0, seconds, 0, sample_rate / 2000))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (kHz)")
    ax.set_title(title[:90])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def loss_curves_figure(curves: Mapping[str, Sequence[tuple[int, float]]], title: str = ""):
    """One panel per metric, each on its own y scale (log where all its values are positive).

    The VAE's terms differ by two orders of magnitude (KL about 200, STFT about 5, adversarial under 1):
    on shared axes every curve but the largest is a flat line at the bottom.
    """
    plt = _pyplot()
    named = [(name, sorted(points)) for name, points in curves.items() if points]
    if not named:
        raise ValueError("no loss curve has any points: log train/* metrics before plotting them")
    columns = min(len(named), 3)
    rows = -(-len(named) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.6 * rows + 0.4), dpi=100, squeeze=False)
    for ax, (name, points) in zip(axes.flat, named):
        steps, values = zip(*points)
        ax.plot(steps, values, marker="." if len(points) < 30 else None)
        if min(values) > 0:
            ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(named):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def write_loss_curves_png(curves: Mapping[str, Sequence[tuple[int, float]]], path: Path, title: str = "") -> Path:
    """curves: {metric name: [(step, value), ...]} -> a PNG of `loss_curves_figure`."""
    plt = _pyplot()
    fig = loss_curves_figure(curves, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_wav(audio: np.ndarray, sample_rate: int, path: Path) -> Path:
    """audio: (channels, samples) float in [-1, 1] -> 16-bit WAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(audio, -1, 1).T, sample_rate, subtype="PCM_16")
    return path
