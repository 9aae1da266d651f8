"""The synthetic captioned dataset of the embedded default (`sa-train data synth`).

Real audio files (FLAC or WAV, 44.1 kHz stereo by default) of four kinds, with captions that
state what can be measured back from generated audio:

    tone    "a sine tone at A4 (440.0 Hz), 2.31 seconds"          pitch
    chord   "a C major chord on C4 (261.6 Hz), 1.52 seconds"      root pitch
    noise   "3 bursts of white noise, 2.80 seconds"               burst count
    drums   "a drum pattern at 120 BPM, 2.95 seconds"             tempo

Durations spread from ``min_seconds`` to ``max_seconds`` (by default the tiny window, 131072
samples = 2.97 s) so that timing conditioning and silence padding both get exercised. Each file
has a JSON sidecar (caption and fields), and ``manifest.jsonl`` lists all of them with the
structured fields (kind, note, frequency_hz, bpm, seconds ...). Everything derives from
``(seed, index)``: the same seed writes byte-identical files.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
import soundfile

logger = logging.getLogger(__name__)

KINDS = ("tone", "chord", "noise", "drums")
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
FORMATS = {"flac": "FLAC", "wav": "WAV"}
DEFAULT_MAX_SECONDS = 131072 / 44100  # the tiny config's window
MANIFEST_NAME = "manifest.jsonl"


def note_name(midi: int) -> str:
    """Scientific pitch name, e.g. 69 -> 'A4'."""
    return f"{NOTE_NAMES[midi % 12]}{midi // 12 - 1}"


def note_frequency(midi: int) -> float:
    """Equal-tempered frequency (Hz) with A4 = 440 Hz."""
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def _envelope(n: int, sample_rate: int, attack: float = 0.01, release: float = 0.05) -> np.ndarray:
    env = np.ones(n)
    a, r = min(n, int(attack * sample_rate)), min(n, int(release * sample_rate))
    env[:a] = np.linspace(0.0, 1.0, a, endpoint=False)
    if r:
        env[n - r :] *= np.linspace(1.0, 0.0, r)
    return env


def _partials(freq: float, t: np.ndarray, waveform: str, sample_rate: int) -> np.ndarray:
    # Additive and band-limited, so the named pitch is the lowest partial and nothing aliases.
    harmonics = {"sine": [(1, 1.0)], "triangle": [(k, (-1) ** (k // 2) / k**2) for k in range(1, 16, 2)]}
    harmonics["sawtooth"] = [(k, 1.0 / k) for k in range(1, 17)]
    out = np.zeros_like(t)
    for k, amp in harmonics[waveform]:
        if k * freq < sample_rate / 2:
            out += amp * np.sin(2 * np.pi * k * freq * t)
    return out


def _tone(rng, t, sr):
    midi, waveform = int(rng.integers(48, 85)), str(rng.choice(["sine", "triangle", "sawtooth"]))
    freq = note_frequency(midi)
    fields = {"kind": "tone", "waveform": waveform, "note": note_name(midi), "frequency_hz": round(freq, 1)}
    return _partials(freq, t, waveform, sr), f"a {waveform} tone at {note_name(midi)} ({freq:.1f} Hz)", fields


def _chord(rng, t, sr):
    root, quality = int(rng.integers(48, 73)), str(rng.choice(["major", "minor"]))
    steps = (0, 4, 7) if quality == "major" else (0, 3, 7)
    audio = sum(_partials(note_frequency(root + s), t, "triangle", sr) for s in steps) * np.exp(-1.5 * t)
    freq = note_frequency(root)
    name = NOTE_NAMES[root % 12]
    fields = {"kind": "chord", "chord": f"{name} {quality}", "note": note_name(root), "frequency_hz": round(freq, 1)}
    return audio, f"a {name} {quality} chord on {note_name(root)} ({freq:.1f} Hz)", fields


def _noise(rng, t, sr):
    color, bursts = str(rng.choice(["white", "pink"])), int(rng.integers(1, 5))
    n = len(t)
    noise = rng.standard_normal(n)
    if color == "pink":  # 1/f power: scale the spectrum by 1/sqrt(f)
        spectrum = np.fft.rfft(noise)
        spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
        noise = np.fft.irfft(spectrum, n)
    gate = np.zeros(n)
    slot = n // bursts
    for b in range(bursts):  # one burst per equal slot, so bursts never merge and can be counted
        length = int(slot * rng.uniform(0.3, 0.6))
        start = b * slot + int(rng.integers(0, slot - length + 1))
        gate[start : start + length] = _envelope(length, sr, 0.005, 0.02)
    noun = "burst" if bursts == 1 else "bursts"
    fields = {"kind": "noise", "noise": color, "bursts": bursts}
    return noise / (np.abs(noise).max() + 1e-9) * gate, f"{bursts} {noun} of {color} noise", fields


def _drums(rng, t, sr):
    bpm = int(rng.integers(16, 33)) * 5  # 80 .. 160 BPM in steps of 5
    beat = 60.0 / bpm
    audio = np.zeros_like(t)
    hit_len = int(0.2 * sr)
    ht = np.arange(hit_len) / sr
    kick = np.sin(2 * np.pi * (50 * ht + 100 * (1 - np.exp(-ht * 30)) / 30)) * np.exp(-ht * 20)
    snare = (0.6 * rng.standard_normal(hit_len) + 0.4 * np.sin(2 * np.pi * 180 * ht)) * np.exp(-ht * 25)
    hat = np.diff(rng.standard_normal(hit_len + 1)) * np.exp(-ht * 80) * 0.3
    step = 0
    while step * beat / 2 < t[-1]:  # eighth-note grid: kick on beats 1 and 3, snare on 2 and 4
        start = int(round(step * beat / 2 * sr))
        hits = [hat]
        if step % 2 == 0:
            hits.append(kick if (step // 2) % 2 == 0 else snare)
        for hit in hits:
            end = min(len(t), start + hit_len)
            audio[start:end] += hit[: end - start]
        step += 1
    return audio, f"a drum pattern at {bpm} BPM", {"kind": "drums", "bpm": bpm}


_MAKERS = {"tone": _tone, "chord": _chord, "noise": _noise, "drums": _drums}


def synth_example(
    index: int, seed: int, *, sample_rate: int = 44100, min_seconds: float = 1.0, max_seconds: float = DEFAULT_MAX_SECONDS
) -> tuple[np.ndarray, str, dict[str, Any]]:
    """One example: ``audio: (samples, 2) float32``, its caption and its fields.

    The kind cycles through :data:`KINDS` with the index; everything else is drawn from a
    generator seeded by ``(seed, index)``.
    """
    rng = np.random.default_rng([seed, index])
    seconds = round(float(rng.uniform(min_seconds, max_seconds)), 2)
    n = min(int(round(seconds * sample_rate)), int(max_seconds * sample_rate))
    t = np.arange(n) / sample_rate
    kind = KINDS[index % len(KINDS)]
    mono, description, fields = _MAKERS[kind](rng, t, sample_rate)
    if kind != "noise":
        mono = mono * _envelope(n, sample_rate)
    peak = float(rng.uniform(0.3, 0.8))
    mono = mono / (np.abs(mono).max() + 1e-9) * peak
    pan = float(rng.uniform(-0.5, 0.5))  # constant-power pan: the caption's properties hold on both sides
    angle = (pan + 1) * np.pi / 4
    audio = np.stack([mono * np.cos(angle), mono * np.sin(angle)], axis=1) * np.sqrt(2)
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
    fields["seconds"] = round(n / sample_rate, 2)
    return audio, f"{description}, {fields['seconds']:.2f} seconds", fields


def write_synth_dataset(
    out_dir: str,
    num: int,
    seed: int = 0,
    *,
    fmt: str = "flac",
    sample_rate: int = 44100,
    min_seconds: float = 1.0,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> list[dict[str, Any]]:
    """Write ``num`` files, their JSON sidecars and ``manifest.jsonl`` into ``out_dir``.

    Returns the manifest rows (``path`` relative to ``out_dir``, ``caption`` and the fields).
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r} is not supported; choose one of {sorted(FORMATS)}")
    if num < 1:
        raise ValueError(f"--num {num} must be at least 1")
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"durations need 0 < min_seconds ({min_seconds}) <= max_seconds ({max_seconds})")
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for index in range(num):
        audio, caption, fields = synth_example(
            index, seed, sample_rate=sample_rate, min_seconds=min_seconds, max_seconds=max_seconds
        )
        name = f"{index:05d}_{fields['kind']}.{fmt}"
        soundfile.write(os.path.join(out_dir, name), audio, sample_rate, subtype="PCM_16", format=FORMATS[fmt])
        sidecar = {"caption": caption, **fields}
        with open(os.path.join(out_dir, os.path.splitext(name)[0] + ".json"), "w", encoding="utf-8") as f:
            json.dump(sidecar, f, sort_keys=True)
            f.write("\n")
        rows.append({"path": name, **sidecar})
    with open(os.path.join(out_dir, MANIFEST_NAME), "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")
    logger.info("wrote %d synthetic files and %s to %s", num, MANIFEST_NAME, out_dir)
    return rows
