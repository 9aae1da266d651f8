"""Decoding one training window from one audio file, and classifying files that cannot give one.

:func:`read_window` reads the header, picks the crop, seeks to it and reads only that window
(plus a few samples of margin for the resampler), so a 10-minute file costs no more than its
95 s crop. It never raises for bad input: a file that cannot give a valid window comes back as a
:class:`BadFile` with a reason from :class:`Reason`, to be counted by the caller.

Timing values follow the paper: ``seconds_start = floor(offset / rate)`` with the offset in the
file's own samples, ``seconds_total = ceil(frames / rate)`` of the whole file.

Only the window is inspected, so a NaN or a cut stream outside it goes unnoticed here, and a
file counts as silent only when the window covers all of it (a silent stretch inside a longer
file is legitimate audio). `sa-train data check` decodes whole files and catches the rest.
"""

from __future__ import annotations

import math
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Optional, Union

import numpy as np
import soundfile

from sa_train.data.config import DataConfig
from sa_train.data.sources import is_uri, open_audio


# Peak below which a whole file counts as silent: about -100 dBFS, under 16-bit dither.
SILENCE_PEAK = 1e-5
# Source samples read on each side of the window when resampling, so the resampler's filter
# (about 6 zero crossings wide) sees real neighbours instead of the window's edges.
RESAMPLE_MARGIN = 64

Source = Union[str, BinaryIO]


class Reason:
    """Why a file was skipped; the strings are the keys of the bad-file counts and metrics."""

    MISSING = "missing"  # the path does not exist
    ZERO_LENGTH = "zero_length"  # an empty file, or a header with no frames
    UNREADABLE = "unreadable"  # not an audio file soundfile can open (e.g. text named .wav)
    TRUNCATED = "truncated"  # fewer frames on disk than the header declares
    DECODE_ERROR = "decode_error"  # the codec failed mid-stream (corrupt or cut compressed data)
    NON_FINITE = "non_finite"  # NaN or Inf samples
    SILENT = "silent"  # the whole file is digital silence
    TOO_SHORT = "too_short"  # shorter than data.min_seconds


@dataclass(frozen=True)
class BadFile:
    """A file that gave no training example: its path, a :class:`Reason` and a detail message."""

    path: str
    reason: str
    detail: str = ""


@dataclass
class Example:
    """One decoded, cropped, padded training window.

    Attributes:
        audio: (channels, window_samples) float32 in [-1, 1], silence after the real audio.
        padding_mask: (window_samples,) bool, True for real audio.
        seconds_start: floor(crop offset / source rate).
        seconds_total: ceil(file frames / source rate).
        path: the source file.
        offset: crop offset in source samples.
        source_sample_rate: the file's own rate (Hz).
    """

    audio: np.ndarray
    padding_mask: np.ndarray
    seconds_start: int
    seconds_total: int
    path: str
    offset: int
    source_sample_rate: int


class _Bad(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def describe(source: Source, path: Optional[str] = None) -> str:
    """The path to report for a source."""
    if path is not None:
        return path
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "name", repr(source)))


@contextmanager
def open_soundfile(source: Source) -> Iterator[soundfile.SoundFile]:
    """Open a path, URI or file object with soundfile (closing what it opened on exit); bad
    input raises :class:`_Bad`."""
    remote = None
    if isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
        if not is_uri(source):
            try:
                size = os.path.getsize(source)
            except FileNotFoundError as err:
                raise _Bad(Reason.MISSING, str(err)) from err
            except OSError as err:
                raise _Bad(Reason.UNREADABLE, str(err)) from err
        else:
            try:
                source = remote = open_audio(source)
                size = remote.size()
            except FileNotFoundError as err:
                raise _Bad(Reason.MISSING, str(err)) from err
            except OSError as err:
                raise _Bad(Reason.UNREADABLE, str(err)) from err
        if size == 0:
            if remote is not None:
                remote.close()
            raise _Bad(Reason.ZERO_LENGTH, "the file is empty (0 bytes)")
    try:
        try:
            sound = soundfile.SoundFile(source)
        except (soundfile.SoundFileError, OSError) as err:
            raise _Bad(Reason.UNREADABLE, str(err)) from err
        with sound:
            if sound.frames <= 0:
                raise _Bad(Reason.ZERO_LENGTH, "the header declares no audio frames")
            if _header_says_truncated(sound):
                raise _Bad(Reason.TRUNCATED, "the data chunk is shorter than its header declares")
            yield sound
    finally:
        if remote is not None:
            remote.close()


# libsndfile accepts a WAV/AIFF whose data chunk was cut short, shrinks `frames` to what is there
# and notes "data : <declared> (should be <present>)" in its log; that log is the only signal.
_CHUNK_SHORT = re.compile(r"^(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def _header_says_truncated(sound: soundfile.SoundFile) -> bool:
    if sound.format not in ("WAV", "WAVEX", "AIFF", "RF64", "W64"):
        return False
    match = _CHUNK_SHORT.search(sound.extra_info)
    return bool(match) and int(match.group(2)) < int(match.group(1))


def read_frames(sound: soundfile.SoundFile, start: int, count: int) -> np.ndarray:
    """(channels, count) float32 read from ``start`` (a transposed view of soundfile's interleaved
    frames, not copied); a short read or codec failure is bad input."""
    try:
        if start != sound.tell():
            sound.seek(start)
        data = sound.read(count, dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, OSError) as err:
        raise _Bad(Reason.DECODE_ERROR, f"decoding frames {start}..{start + count} failed: {err}") from err
    if data.shape[0] < count:
        raise _Bad(
            Reason.TRUNCATED,
            f"read {data.shape[0]} of {count} frames at {start}; the header declares {sound.frames} frames",
        )
    return data.T


def finite_peak(audio: np.ndarray) -> float:
    """max |sample|, NaN or Inf if any sample is; two reductions, no temporary arrays."""
    if audio.size == 0:
        return 0.0
    high, low = float(audio.max()), float(audio.min())
    if not (math.isfinite(high) and math.isfinite(low)):
        return math.nan
    return max(high, -low)


def apply_channel_policy(audio: np.ndarray, channels: int, extra: str) -> np.ndarray:
    """(source_channels, n) -> (channels, n): fewer channels are repeated (mono duplicated); more
    are down-mixed (``extra='downmix'``) or the first ``channels`` kept (``'truncate'``)."""
    have = audio.shape[0]
    if have == channels:
        return audio
    if have < channels:
        return audio[np.arange(channels) % have]
    if extra == "truncate":
        return audio[:channels]
    if channels == 1:
        return audio.mean(axis=0, keepdims=True)
    if have == 6 and channels == 2:
        # 5.1 in WAV/FLAC order (L, R, C, LFE, Ls, Rs): ITU-R BS.775 fold-down without the LFE,
        # normalised so a full-scale input stays within [-1, 1].
        g = 1 / math.sqrt(2)
        left = audio[0] + g * audio[2] + g * audio[4]
        right = audio[1] + g * audio[2] + g * audio[5]
        return np.stack([left, right]) / (1 + 2 * g)
    # Any other layout: source channel i feeds output channel i % channels, averaged.
    groups = np.arange(have) % channels
    return np.stack([audio[groups == c].mean(axis=0) for c in range(channels)])


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """(channels, n) at ``source_rate`` -> (channels, ~n * target / source) at ``target_rate``."""
    if source_rate == target_rate:
        return audio
    import torch
    import torchaudio.functional

    with torch.no_grad():
        out = torchaudio.functional.resample(torch.from_numpy(audio), source_rate, target_rate)
    return out.numpy()


def read_window(
    source: Source,
    cfg: DataConfig,
    rng: np.random.Generator,
    *,
    path: Optional[str] = None,
    window_samples: Optional[int] = None,
    crop: Optional[str] = None,
    augment: bool = True,
    out: Optional[tuple[np.ndarray, np.ndarray]] = None,
) -> Union[Example, BadFile]:
    """Decode one training window of a file.

    Args:
        source: a local path, a URI, or a seekable binary file object.
        cfg: sample rate, channels, crop policy, min_seconds and phase flip come from here.
        rng: draws the crop offset and the phase flip.
        path: the path to report (defaults to the source's name).
        window_samples: window length at ``cfg.sample_rate`` (default ``cfg.window_samples``).
        crop: 'random' or 'start' (default ``cfg.crop``).
        augment: apply the phase flip (off when pre-encoding latents).
        out: (audio (channels, window), mask (window,)) buffers to decode into, e.g. one slot of
            a batch, which saves a copy per example; their content is undefined after a BadFile.

    Returns:
        an :class:`Example` with ``audio: (cfg.channels, window_samples)``, or a :class:`BadFile`.
    """
    name = describe(source, path)
    window = window_samples or cfg.window_samples
    crop = crop or cfg.crop
    try:
        with open_soundfile(source) as sound:
            return _crop(sound, name, cfg, rng, window, crop, augment, out)
    except _Bad as bad:
        return BadFile(name, bad.reason, bad.detail)


def _crop(sound, name, cfg: DataConfig, rng, window: int, crop: str, augment: bool, out) -> Union[Example, BadFile]:
    frames, rate = sound.frames, sound.samplerate
    if frames / rate < cfg.min_seconds:
        return BadFile(name, Reason.TOO_SHORT, f"{frames / rate:.3f} s < data.min_seconds={cfg.min_seconds}")

    source_window = math.ceil(window * rate / cfg.sample_rate)
    latest = max(frames - source_window, 0)
    offset = int(rng.integers(0, latest + 1)) if crop == "random" and latest > 0 else 0
    if crop == "random" and latest > 0 and cfg.end_crop_probability > 0 and rng.random() < cfg.end_crop_probability:
        # The window overhangs the file's end: 1 .. source_window - 1 real frames, then padding.
        offset = frames - int(rng.integers(1, source_window))
    real_end = min(frames, offset + source_window)

    margin = RESAMPLE_MARGIN if rate != cfg.sample_rate else 0
    read_start, read_end = max(0, offset - margin), min(frames, real_end + margin)
    audio = read_frames(sound, read_start, read_end - read_start)
    peak = finite_peak(audio)
    if math.isnan(peak):
        return BadFile(name, Reason.NON_FINITE, f"NaN or Inf samples in frames {read_start}..{read_end}")

    audio = apply_channel_policy(audio, cfg.channels, cfg.extra_channels)
    audio = resample(audio, rate, cfg.sample_rate)
    first = round((offset - read_start) * cfg.sample_rate / rate)
    real = min(window, math.ceil((real_end - offset) * cfg.sample_rate / rate))
    audio = audio[:, first : first + real]
    real = audio.shape[1]

    whole_file = offset == 0 and real_end == frames
    if whole_file and (real == 0 or peak < SILENCE_PEAK):
        return BadFile(name, Reason.SILENT, f"peak below {SILENCE_PEAK} over the whole file")

    if out is None:
        out = np.empty((cfg.channels, window), dtype=np.float32), np.empty(window, dtype=bool)
    buffer, mask = out
    if peak > 1.0 or rate != cfg.sample_rate:  # float files and resampling overshoot full scale
        np.clip(audio, -1.0, 1.0, out=buffer[:, :real])
    else:
        buffer[:, :real] = audio
    buffer[:, real:] = 0.0
    mask[:real] = True
    mask[real:] = False
    if augment and cfg.phase_flip_probability > 0 and rng.random() < cfg.phase_flip_probability:
        np.negative(buffer, out=buffer)
    return Example(
        audio=buffer,
        padding_mask=mask,
        seconds_start=offset // rate,
        seconds_total=-(-frames // rate),
        path=name,
        offset=offset,
        source_sample_rate=rate,
    )
