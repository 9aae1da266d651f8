"""Fixtures of the data tests: real audio files written on the spot, and one local Ray session."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import soundfile

# The suite runs with --import-mode=importlib, which leaves sys.path alone; the tests of this
# folder import their shared helpers (audio_helpers.py) by name, so put the folder on the path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from audio_helpers import write_audio  # noqa: E402


@pytest.fixture
def make_audio(tmp_path):
    """make_audio(name, **write_audio kwargs) -> path of a tone file in a fresh folder."""

    def make(name: str, **kwargs) -> str:
        return write_audio(tmp_path / name, **kwargs)

    return make


@pytest.fixture
def bad_corpus(tmp_path):
    """A folder with good files and one file of each bad kind; returns (folder, {name: reason})."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_audio(folder / "good_a.wav", seconds=2.0)
    write_audio(folder / "good_b.flac", seconds=1.5, sample_rate=22050, channels=1)
    (folder / "sub").mkdir()
    write_audio(folder / "sub" / "good_c.ogg", seconds=2.5)
    (folder / "good_a.txt").write_text("a tone at A4\n")
    full = open(write_audio(tmp_path / "whole.wav", seconds=2.0), "rb").read()
    (folder / "truncated.wav").write_bytes(full[: len(full) // 2])
    (folder / "not_audio.wav").write_text("this is a text file, not a RIFF header\n" * 20)
    (folder / "empty.flac").write_bytes(b"")
    nan = np.full((44100, 2), 0.1, dtype=np.float32)
    nan[1000:1010] = np.nan
    soundfile.write(str(folder / "nan.wav"), nan, 44100, subtype="FLOAT")
    soundfile.write(str(folder / "silent.wav"), np.zeros((44100, 2), np.float32), 44100)
    write_audio(folder / "short.wav", seconds=0.1)
    expected = {
        "truncated.wav": "truncated",
        "not_audio.wav": "unreadable",
        "empty.flac": "zero_length",
        "nan.wav": "non_finite",
        "silent.wav": "silent",
        "short.wav": "too_short",
    }
    return str(folder), expected
