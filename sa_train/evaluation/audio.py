"""Reading the clips to evaluate: a folder with a manifest, or a plain folder of audio files.

A folder of generated audio is what `sa-train generate` writes (``manifest.jsonl`` rows with
``path``, ``prompt``, ``seconds_total``), but any generator's output works when it has such a
manifest. The synthetic dataset's manifest (``caption`` and ``seconds``) is read too, so a synth
folder can serve as the reference or, for a sanity check, as the "generated" side.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import soundfile

from sa_train.data.sources import is_audio_path

MANIFEST_NAME = "manifest.jsonl"


@dataclass(frozen=True)
class ClipEntry:
    """One clip of an evaluation folder.

    Attributes:
        path: absolute path of the audio file.
        prompt: its text prompt or caption; None when the folder has no manifest.
        seconds_total: the requested duration in seconds; None when unknown.
    """

    path: str
    prompt: Optional[str] = None
    seconds_total: Optional[float] = None


def _entry_from_row(folder: str, manifest: str, line_no: int, row: dict) -> ClipEntry:
    if "path" not in row:
        raise ValueError(f"{manifest} line {line_no}: a row needs a 'path' key (relative to the manifest's folder)")
    path = row["path"] if os.path.isabs(row["path"]) else os.path.join(folder, row["path"])
    prompt = row.get("prompt", row.get("caption"))
    seconds = row.get("seconds_total", row.get("seconds"))
    return ClipEntry(os.path.abspath(path), None if prompt is None else str(prompt),
                     None if seconds is None else float(seconds))


def list_clips(folder: str, require_manifest: bool = False) -> list[ClipEntry]:
    """The clips of ``folder``: its ``manifest.jsonl`` rows, or every audio file below it.

    Raises ValueError when the folder does not exist, holds no audio, lacks a required manifest,
    or names a file that is missing.
    """
    if not os.path.isdir(folder):
        raise ValueError(f"evaluation folder {folder!r} does not exist or is not a folder")
    manifest = os.path.join(folder, MANIFEST_NAME)
    if os.path.isfile(manifest):
        entries = []
        with open(manifest, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{manifest} line {line_no} is not JSON: {err}") from None
                    entries.append(_entry_from_row(folder, manifest, line_no, row))
        missing = [e.path for e in entries if not os.path.isfile(e.path)]
        if missing:
            raise ValueError(f"{manifest} names {len(missing)} missing file(s), e.g. {missing[0]!r}")
    elif require_manifest:
        raise ValueError(
            f"{folder!r} has no {MANIFEST_NAME}; the generated folder needs one with path, prompt and "
            "seconds_total per clip (as `sa-train generate` writes)"
        )
    else:
        entries = [
            ClipEntry(os.path.abspath(os.path.join(root, name)))
            for root, _, names in sorted(os.walk(folder))
            for name in sorted(names)
            if is_audio_path(name)
        ]
    if not entries:
        raise ValueError(f"{folder!r} holds no audio files to evaluate")
    return entries


def load_audio(path: str) -> tuple[np.ndarray, int]:
    """``(audio: (channels, samples) float32, sample_rate)``; raises ValueError for unreadable files."""
    try:
        data, sr = soundfile.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise ValueError(f"cannot read audio file {path!r}: {err}") from None
    if not np.all(np.isfinite(data)):
        raise ValueError(f"audio file {path!r} holds NaN or Inf samples")
    return np.ascontiguousarray(data.T), int(sr)


def as_channels(audio: np.ndarray) -> np.ndarray:
    """``audio: (samples,) or (channels, samples)`` -> ``(channels, samples)`` float32."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        return audio[None]
    if audio.ndim != 2:
        raise ValueError(f"audio must be (samples,) or (channels, samples); got shape {audio.shape}")
    return audio


def to_mono(audio: np.ndarray) -> np.ndarray:
    """``audio: (channels, samples) or (samples,)`` -> ``(samples,)`` float32, the channel mean."""
    return as_channels(audio).mean(axis=0)


def resample(audio: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """``audio: (channels, samples)`` at ``sr`` -> ``(channels, samples')`` at ``target_sr``."""
    audio = as_channels(audio)
    if sr == target_sr:
        return audio
    import torch
    import torchaudio.functional

    out = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(audio)), int(sr), int(target_sr))
    return out.numpy()
