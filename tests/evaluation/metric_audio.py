"""Helpers for the metric-model tests: WAV files as a user's folder holds them (imported by name
from the tests; conftest.py puts this folder on sys.path, as --import-mode=importlib needs)."""

from __future__ import annotations

import json
import os

import numpy as np
import soundfile

# (name, sample rate, channels, seconds, tone Hz): the rates and channel counts a user's folder mixes.
CLIPS = (
    ("stereo_44k.wav", 44100, 2, 2.2, 440.0),
    ("mono_48k.wav", 48000, 1, 1.5, 660.0),
    ("stereo_22k.wav", 22050, 2, 0.7, 330.0),
    ("mono_16k.wav", 16000, 1, 3.1, 880.0),
)
PROMPTS = ("a sine tone at A4 (440.0 Hz)", "a drum pattern at 120 BPM", "white noise", "a chord of three notes")


def tone_clip(sr: int, channels: int, seconds: float, freq: float, seed: int) -> np.ndarray:
    """``(samples, channels)``: a tone plus a little noise, the right channel an octave up (so
    stereo channels differ)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    chans = [0.4 * np.sin(2 * np.pi * freq * (1 + c) * t) + 0.02 * rng.standard_normal(t.size) for c in range(channels)]
    return np.stack(chans, axis=1).astype(np.float32)


def write_folder(folder, seed: int = 0, prompts=PROMPTS, with_manifest: bool = True) -> str:
    """The four CLIPS as 16-bit WAVs (each with one of ``prompts``) and a manifest.jsonl."""
    os.makedirs(folder, exist_ok=True)
    rows = []
    for i, (name, sr, channels, seconds, freq) in enumerate(CLIPS):
        soundfile.write(os.path.join(folder, name), tone_clip(sr, channels, seconds, freq, seed + i), sr,
                        subtype="PCM_16")
        rows.append({"path": name, "prompt": prompts[i], "seconds_total": seconds})
    if with_manifest:
        with open(os.path.join(folder, "manifest.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return str(folder)
