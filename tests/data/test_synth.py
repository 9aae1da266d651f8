"""The synthetic captioned dataset: deterministic real files whose captions can be measured back."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile

from audio_helpers import dominant_frequency
from sa_train.cli.data import register
from sa_train.data.config import DataConfig
from sa_train.data.pipeline import iter_local_batches
from sa_train.data.synth import DEFAULT_MAX_SECONDS, note_frequency, note_name, write_synth_dataset


def run_cli(argv):
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def read_manifest(folder):
    with open(os.path.join(folder, "manifest.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_note_names_and_frequencies():
    assert note_name(69) == "A4" and note_frequency(69) == 440.0
    assert note_name(60) == "C4" and note_frequency(60) == pytest.approx(261.63, abs=0.01)


def test_same_seed_writes_byte_identical_files(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    write_synth_dataset(a, 8, seed=3)
    write_synth_dataset(b, 8, seed=3)
    write_synth_dataset(c, 8, seed=4)
    for name in sorted(os.listdir(a)):
        assert open(os.path.join(a, name), "rb").read() == open(os.path.join(b, name), "rb").read(), name
    assert read_manifest(a) != read_manifest(c)


def test_files_are_44k_stereo_with_durations_spread_up_to_the_window(tmp_path):
    rows = write_synth_dataset(str(tmp_path), 32, seed=0)
    durations = []
    for row in rows:
        info = soundfile.info(str(tmp_path / row["path"]))
        assert info.samplerate == 44100 and info.channels == 2 and info.format == "FLAC"
        assert info.duration == pytest.approx(row["seconds"], abs=0.01)
        durations.append(info.duration)
    assert 1.0 <= min(durations) < 1.6 and 2.4 < max(durations) <= DEFAULT_MAX_SECONDS
    assert {r["kind"] for r in rows} == {"tone", "chord", "noise", "drums"}


def test_tone_captions_state_the_pitch_that_is_in_the_audio(tmp_path):
    rows = write_synth_dataset(str(tmp_path), 12, seed=1)
    tones = [r for r in rows if r["kind"] == "tone" and r["waveform"] == "sine"] or [r for r in rows if r["kind"] == "tone"]
    for row in tones:
        audio, rate = soundfile.read(str(tmp_path / row["path"]))
        assert f"{row['note']} ({row['frequency_hz']:.1f} Hz)" in row["caption"]
        assert dominant_frequency(audio[:, 0], rate) == pytest.approx(row["frequency_hz"], rel=0.02)


def test_drum_captions_state_the_tempo_of_the_hits(tmp_path):
    rows = [r for r in write_synth_dataset(str(tmp_path), 16, seed=2) if r["kind"] == "drums"]
    for row in rows:
        audio, rate = soundfile.read(str(tmp_path / row["path"]))
        envelope = np.abs(audio[:, 0])
        hop = int(rate * 60 / row["bpm"] / 2)  # eighth notes
        onsets = [int(np.argmax(envelope[i : i + 200])) + i for i in range(0, len(envelope) - hop, hop)]
        assert f"{row['bpm']} BPM" in row["caption"]
        assert all(envelope[o] > 0.05 for o in onsets)  # a hit on every eighth-note grid point


def test_sidecars_make_the_folder_a_captioned_source(tmp_path):
    write_synth_dataset(str(tmp_path), 4, seed=0, fmt="wav")
    cfg = DataConfig(sources=[str(tmp_path)], max_bad_fraction=0.0)
    (batch,) = list(iter_local_batches(cfg, 4, seed=0))
    assert sorted(batch.prompts) == sorted(r["caption"] for r in read_manifest(tmp_path))
    assert (batch.seconds_total >= 1).all() and (batch.seconds_total <= 3).all()
    assert not batch.padding_mask.all()  # files shorter than the window are padded


def test_cli_synth_writes_the_dataset(tmp_path, capsys):
    out = str(tmp_path / "synth")
    assert run_cli(["data", "synth", out, "--num", "5", "--seed", "1", "--format", "wav", "--max-seconds", "2"]) == 0
    rows = read_manifest(out)
    assert len(rows) == 5 and all(r["path"].endswith(".wav") and r["seconds"] <= 2.0 for r in rows)
    assert "manifest.jsonl" in capsys.readouterr().out


def test_cli_synth_rejects_impossible_durations(tmp_path, capsys):
    assert run_cli(["data", "synth", str(tmp_path), "--num", "2", "--min-seconds", "3", "--max-seconds", "2"]) == 2
    assert "min_seconds" in capsys.readouterr().err
