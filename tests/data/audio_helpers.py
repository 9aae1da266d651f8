"""Helpers of the data tests: writing real audio files and measuring them."""

from __future__ import annotations

import os
import time

import numpy as np
import soundfile


def write_audio(
    path,
    seconds: float = 2.0,
    sample_rate: int = 44100,
    channels: int = 2,
    *,
    frequency: float = 440.0,
    amplitude: float = 0.5,
    subtype: str | None = None,
    format: str | None = None,
    frames: int | None = None,
) -> str:
    """Write a sine tone (the same in every channel) and return the path as str."""
    n = frames if frames is not None else int(round(seconds * sample_rate))
    tone = amplitude * np.sin(2 * np.pi * frequency * np.arange(n) / sample_rate)
    data = np.repeat(tone[:, None], channels, axis=1).astype(np.float32)
    soundfile.write(str(path), data, sample_rate, subtype=subtype, format=format)
    return str(path)


def dominant_frequency(audio: np.ndarray, sample_rate: int) -> float:
    """Frequency (Hz) of the largest FFT bin of a 1-D signal."""
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * sample_rate / len(audio))


def names(paths) -> set[str]:
    """Base names of paths."""
    return {os.path.basename(str(p)) for p in paths}


class PoolingEncoderFactory:
    """A stand-in autoencoder factory for encode jobs: ``factory(device)`` returns an encoder
    taking the mean of each 1024-sample block, channels (L, R, L, R). Lives here so Ray workers
    can import it by name."""

    def __call__(self, device: str):
        import torch

        assert device in ("cpu", "cuda")
        return lambda audio: torch.cat([audio.reshape(*audio.shape[:2], -1, 1024).mean(-1)] * 2, dim=1)


class ThreadCountingEncoderFactory(PoolingEncoderFactory):
    """The pooling encoder, which also notes in ``folder`` (one file per encode call) how many torch
    threads the actor encodes with."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __call__(self, device: str):
        import torch

        encode = super().__call__(device)

        def counting(audio):
            with open(os.path.join(self.folder, f"{os.getpid()}-{time.monotonic_ns()}"), "w") as f:
                f.write(str(torch.get_num_threads()))
            return encode(audio)

        return counting
