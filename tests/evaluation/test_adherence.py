"""Prompt adherence on the synthetic dataset: targets parsed from captions, measured from audio."""

from __future__ import annotations

import numpy as np
import pytest

from sa_train.data.synth import synth_example
from sa_train.evaluation.adherence import (
    adherence_summary, count_bursts, detect_pitch, detect_tempo, measure_adherence, note_to_hz, parse_prompt,
)

SR = 44100


def _examples(kind: str, count: int, seed: int = 5):
    """``count`` synthetic examples of one kind: (audio (channels, samples), caption, fields)."""
    out, index = [], {"tone": 0, "chord": 1, "noise": 2, "drums": 3}[kind]
    while len(out) < count:
        audio, caption, fields = synth_example(index, seed)
        out.append((audio.T, caption, fields))
        index += 4
    return out


def test_prompts_of_every_synthetic_kind_parse_to_their_targets():
    assert parse_prompt("a sine tone at A4 (440.0 Hz), 2.31 seconds") == parse_prompt("a sine tone at A4 (440.0 Hz)")
    tone = parse_prompt("a sawtooth tone at A4 (440.0 Hz), 2.31 seconds")
    assert (tone.kind, tone.frequency_hz, tone.bpm, tone.bursts) == ("tone", 440.0, None, None)
    chord = parse_prompt("a C major chord on C4 (261.6 Hz), 1.52 seconds")
    assert (chord.kind, chord.frequency_hz) == ("chord", 261.6)
    assert parse_prompt("3 bursts of white noise, 2.80 seconds").bursts == 3
    assert parse_prompt("a burst of white noise, 1.0 seconds").bursts == 1
    drums = parse_prompt("a drum pattern at 120 BPM, 2.95 seconds")
    assert (drums.kind, drums.bpm) == ("drums", 120.0)
    assert parse_prompt("a major chord on C4, 1.5 seconds").frequency_hz == pytest.approx(note_to_hz("C", "", 4))
    assert parse_prompt("rain on a tin roof") == parse_prompt("")  # nothing to check


def test_note_names_follow_equal_temperament():
    assert note_to_hz("A", "", 4) == pytest.approx(440.0)
    assert note_to_hz("C", "", 4) == pytest.approx(261.626, abs=1e-3)
    assert note_to_hz("C", "#", 4) == pytest.approx(note_to_hz("D", "b", 4))


@pytest.mark.parametrize("kind", ["tone", "chord"])
def test_pitch_of_synthetic_tones_and_chords_is_within_20_cents(kind):
    for audio, caption, fields in _examples(kind, 6):
        pitch = detect_pitch(audio, SR)
        assert pitch is not None, caption
        assert abs(1200 * np.log2(pitch / fields["frequency_hz"])) < 20, (caption, pitch)


def test_tempo_of_synthetic_drum_patterns_is_within_3_bpm():
    for audio, caption, fields in _examples("drums", 8):
        bpm = detect_tempo(audio, SR)
        assert bpm is not None and abs(bpm - fields["bpm"]) < 3, (caption, bpm)


def test_noise_bursts_are_counted():
    for audio, caption, fields in _examples("noise", 6):
        assert count_bursts(audio, SR) == fields["bursts"], caption


def test_synthetic_files_pass_and_wrong_audio_fails():
    results = [measure_adherence(a, SR, c) for kind in ("tone", "drums") for a, c, _ in _examples(kind, 3)]
    assert all(r.measurable and all(r.passed.values()) for r in results)

    t = np.arange(SR * 2) / SR
    a_sharp = (0.5 * np.sin(2 * np.pi * 466.16 * t))[None]  # A#4: 100 cents above the prompt
    wrong = measure_adherence(a_sharp, SR, "a sine tone at A4 (440.0 Hz), 2.00 seconds", predicted_kind="chord")
    assert wrong.errors["pitch_cents"] == pytest.approx(100, abs=5)
    assert wrong.passed == {"pitch": False, "kind": False}
    drums = _examples("drums", 1)[0]
    off_tempo = measure_adherence(drums[0], SR, f"a drum pattern at {drums[2]['bpm'] + 20} BPM")
    assert off_tempo.passed == {"tempo": False}
    silent = measure_adherence(np.zeros((2, SR), np.float32), SR, "a drum pattern at 120 BPM")
    assert silent.passed == {"tempo": False}

    summary = adherence_summary(results + [wrong, off_tempo, silent])
    assert summary["adherence_num_clips"] == len(results) + 3
    assert summary["adherence_pass_rate"] == pytest.approx(len(results) / (len(results) + 3))
    assert summary["adherence_pitch_pass_rate"] == pytest.approx(3 / 4)
    assert summary["adherence_kind_pass_rate"] == 0.0
