"""Prompt adherence for the synthetic dataset, measured from the audio itself.

The synthetic captions (sa_train.data.synth) state what can be measured back:

    "a sine tone at A4 (440.0 Hz), 2.31 seconds"       -> pitch   (error in cents)
    "a C major chord on C4 (261.6 Hz), 1.52 seconds"   -> root pitch
    "3 bursts of white noise, 2.80 seconds"            -> burst count
    "a drum pattern at 120 BPM, 2.95 seconds"          -> tempo   (error in BPM)

Prompts without a number in Hz may name the note ("a major chord on C4"). Prompts that state
none of these are skipped. The detectors are plain DSP tuned to that dataset, not general
music-information-retrieval tools.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from sa_train.evaluation.audio import to_mono
from sa_train.evaluation.timing import frame_rms_db

_HZ = re.compile(r"(\d+(?:\.\d+)?)\s*Hz\b", re.IGNORECASE)
_NOTE = re.compile(r"\b([A-G])([#b]?)(-?\d)\b")
_BPM = re.compile(r"(\d+(?:\.\d+)?)\s*BPM\b", re.IGNORECASE)
_BURSTS = re.compile(r"\b(\d+|a|an|one|two|three|four|five|six)\s+bursts?\b", re.IGNORECASE)
_WORD_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_SEMITONES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_KIND_WORDS = (("drum", "drums"), ("chord", "chord"), ("noise", "noise"), ("tone", "tone"))

DEFAULT_PITCH_TOLERANCE_CENTS = 50.0  # within a quarter tone either way: the right note
DEFAULT_TEMPO_TOLERANCE = 0.04  # relative: 4.8 BPM at 120 BPM


@dataclass(frozen=True)
class PromptTargets:
    """What a prompt asks for; None where it does not say."""

    kind: Optional[str] = None
    frequency_hz: Optional[float] = None
    bpm: Optional[float] = None
    bursts: Optional[int] = None


def note_to_hz(letter: str, accidental: str, octave: int) -> float:
    """Equal-tempered frequency of a note name, A4 = 440 Hz."""
    semitone = _SEMITONES[letter] + {"#": 1, "b": -1, "": 0}[accidental]
    midi = 12 * (octave + 1) + semitone
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def parse_prompt(prompt: str) -> PromptTargets:
    """Targets stated in a synthetic-dataset style prompt."""
    lower = prompt.lower()
    kind = next((k for word, k in _KIND_WORDS if word in lower), None)
    freq = None
    if m := _HZ.search(prompt):
        freq = float(m.group(1))
    elif kind in ("tone", "chord") and (m := _NOTE.search(prompt)):
        freq = note_to_hz(m.group(1), m.group(2), int(m.group(3)))
    bpm = float(m.group(1)) if (m := _BPM.search(prompt)) else None
    bursts = None
    if m := _BURSTS.search(prompt):
        word = m.group(1).lower()
        bursts = int(word) if word.isdigit() else _WORD_NUMBERS[word]
    return PromptTargets(kind, freq, bpm, bursts)


def _active_span(mono: np.ndarray, sr: int, relative_db: float = -30.0) -> tuple[int, int]:
    hop = max(1, int(round(0.01 * sr)))
    levels = frame_rms_db(mono, sr, 0.01)
    active = np.flatnonzero(levels > levels.max() + relative_db)
    if active.size == 0:
        return 0, 0
    return int(active[0]) * hop, min(mono.size, (int(active[-1]) + 1) * hop)


def detect_pitch(
    audio: np.ndarray, sr: int, fmin: float = 50.0, fmax: float = 2000.0, lowest_peak_db: float = -20.0,
    max_seconds: float = 2.0,
) -> Optional[float]:
    """Lowest strong spectral peak in Hz (the fundamental of a tone, the root of a chord), or None.

    ``audio: (channels, samples) or (samples,)``. Takes up to ``max_seconds`` of the active part,
    finds the local maxima of its windowed, zero-padded spectrum within ``lowest_peak_db`` of the
    strongest one in ``[fmin, fmax]``, and refines the lowest by parabolic interpolation of the
    log magnitude (accurate to well under a cent for steady tones).
    """
    mono = to_mono(audio).astype(np.float64)
    start, end = _active_span(mono, sr)
    segment = mono[start : min(end, start + int(max_seconds * sr))]
    if segment.size < int(0.05 * sr):
        return None
    n_fft = 1 << int(math.ceil(math.log2(segment.size * 2)))  # 2x zero padding: bins of a quarter Hz at 2 s
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(segment.size), n_fft))
    lo, hi = max(1, int(fmin * n_fft / sr)), min(spectrum.size - 2, int(fmax * n_fft / sr) + 1)
    db = np.full(spectrum.size, -np.inf)
    db[lo - 1 : hi + 2] = 20 * np.log10(spectrum[lo - 1 : hi + 2] + 1e-12)
    band = db[lo : hi + 1]
    if band.size < 3:
        return None
    inner = band[1:-1]
    peaks = np.flatnonzero((inner > band[:-2]) & (inner >= band[2:]) & (inner > band.max() + lowest_peak_db)) + 1 + lo
    if peaks.size == 0:
        return None
    k = int(peaks[0])
    a, b, c = db[k - 1], db[k], db[k + 1]
    denom = a - 2 * b + c
    offset = 0.5 * (a - c) / denom if denom != 0 else 0.0
    return float((k + offset) * sr / n_fft)


def _onset_strength(mono: np.ndarray, sr: int, rate: int = 1000, smooth_seconds: float = 0.01) -> np.ndarray:
    """Rises of short-time energy, sampled at ``rate`` Hz: ``(frames,)``."""
    hop = max(1, sr // rate)
    frames = mono.size // hop
    energy = (mono[: frames * hop] ** 2).reshape(frames, hop).mean(axis=1)
    width = max(1, int(smooth_seconds * rate))
    smooth = np.convolve(energy, np.ones(width) / width, mode="same")
    return np.maximum(np.diff(smooth, prepend=smooth[:1]), 0.0)


def detect_onsets(audio: np.ndarray, sr: int, relative: float = 0.3, min_gap_seconds: float = 0.1) -> np.ndarray:
    """Times (s) of the strong onsets: peaks of the energy rise above ``relative`` x the largest,
    at least ``min_gap_seconds`` apart. Weak hits (hi-hats between drum beats) fall below."""
    mono = to_mono(audio).astype(np.float64)
    rate = 1000
    strength = _onset_strength(mono, sr, rate)
    if strength.size == 0 or strength.max() <= 0:
        return np.zeros(0)
    gap = max(1, int(min_gap_seconds * rate))
    padded = np.pad(strength, gap, constant_values=-1.0)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * gap + 1)
    is_peak = (strength >= windows.max(axis=1)) & (strength > relative * strength.max())
    peaks = np.flatnonzero(is_peak)
    kept: list[int] = []
    for p in peaks:  # plateaus give equal neighbours: keep the first of each
        if not kept or p - kept[-1] >= gap:
            kept.append(int(p))
    return np.asarray(kept, dtype=np.float64) / rate


def detect_tempo(audio: np.ndarray, sr: int, min_bpm: float = 30.0, max_bpm: float = 300.0) -> Optional[float]:
    """Beats per minute from the strong onsets (kick and snare), or None with fewer than two.

    The beat period is the median inter-onset interval, refined by a least-squares fit of the
    onset times against their beat numbers, so a skipped beat does not halve the tempo.
    """
    onsets = detect_onsets(audio, sr)
    if onsets.size < 2:
        return None
    period = float(np.median(np.diff(onsets)))
    beats = np.round((onsets - onsets[0]) / period)
    if np.unique(beats).size >= 2:
        period = float(np.polyfit(beats, onsets, 1)[0])
    bpm = 60.0 / period
    return bpm if min_bpm <= bpm <= max_bpm else None


def count_bursts(audio: np.ndarray, sr: int, relative_db: float = -20.0, min_burst_seconds: float = 0.02) -> int:
    """Number of separate loud stretches (noise bursts): runs of 5 ms frames within
    ``relative_db`` of the loud level (the 95th percentile frame), at least ``min_burst_seconds``."""
    levels = frame_rms_db(audio, sr, 0.005)
    above = levels > np.percentile(levels, 95) + relative_db
    edges = np.diff(np.concatenate([[0], above.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return int(np.sum((ends - starts) * 0.005 >= min_burst_seconds))


def cents(measured: float, target: float) -> float:
    return 1200.0 * math.log2(measured / target)


@dataclass
class AdherenceResult:
    """Targets of one prompt, what the audio shows, and whether each check passed."""

    prompt: str
    targets: PromptTargets
    measured: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)  # pitch_cents (signed), tempo_bpm (signed), bursts (signed)
    passed: dict = field(default_factory=dict)  # check name -> bool

    @property
    def measurable(self) -> bool:
        return bool(self.passed)


def measure_adherence(
    audio: np.ndarray, sr: int, prompt: str, predicted_kind: Optional[str] = None,
    pitch_tolerance_cents: float = DEFAULT_PITCH_TOLERANCE_CENTS, tempo_tolerance: float = DEFAULT_TEMPO_TOLERANCE,
) -> AdherenceResult:
    """Check ``audio: (channels, samples)`` against the targets of ``prompt``.

    A detector that finds nothing (silence, no pitch) counts as a failed check. ``predicted_kind``
    (from the synth_kind tagger) adds a kind check when the prompt names a kind.
    """
    targets = parse_prompt(prompt)
    result = AdherenceResult(prompt, targets)
    if targets.frequency_hz is not None:
        pitch = detect_pitch(audio, sr)
        result.measured["pitch_hz"] = pitch
        if pitch is not None:
            result.errors["pitch_cents"] = cents(pitch, targets.frequency_hz)
        result.passed["pitch"] = pitch is not None and abs(result.errors["pitch_cents"]) <= pitch_tolerance_cents
    if targets.bpm is not None:
        bpm = detect_tempo(audio, sr)
        result.measured["tempo_bpm"] = bpm
        if bpm is not None:
            result.errors["tempo_bpm"] = bpm - targets.bpm
        result.passed["tempo"] = bpm is not None and abs(bpm - targets.bpm) <= tempo_tolerance * targets.bpm
    if targets.bursts is not None:
        bursts = count_bursts(audio, sr)
        result.measured["bursts"] = bursts
        result.errors["bursts"] = bursts - targets.bursts
        result.passed["bursts"] = bursts == targets.bursts
    if predicted_kind is not None and targets.kind is not None:
        result.measured["kind"] = predicted_kind
        result.passed["kind"] = predicted_kind == targets.kind
    return result


def adherence_summary(results: Sequence[AdherenceResult]) -> dict[str, float]:
    """Flat figures over the clips: mean absolute errors, pass rate per check and overall.

    ``adherence_pass_rate`` is the fraction of measurable clips whose checks all passed.
    """
    summary: dict[str, float] = {}
    measurable = [r for r in results if r.measurable]
    summary["adherence_num_clips"] = float(len(measurable))
    if not measurable:
        return summary
    summary["adherence_pass_rate"] = float(np.mean([all(r.passed.values()) for r in measurable]))
    for check in ("pitch", "tempo", "bursts", "kind"):
        outcomes = [r.passed[check] for r in measurable if check in r.passed]
        if outcomes:
            summary[f"adherence_{check}_pass_rate"] = float(np.mean(outcomes))
    for key, name in (("pitch_cents", "adherence_pitch_mae_cents"), ("tempo_bpm", "adherence_tempo_mae_bpm")):
        errors = [abs(r.errors[key]) for r in measurable if key in r.errors]
        if errors:
            summary[name] = float(np.mean(errors))
    return summary
