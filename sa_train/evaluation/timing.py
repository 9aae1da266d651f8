"""Timing accuracy, as in the paper: where does the content of a generated clip end, compared with
the seconds_total it was asked for?

The detector is energy based: frame RMS in dB against a threshold that is relative to the clip's
loudest frame (and never below an absolute floor). The content ends after the LAST frame above
the threshold, so a quiet passage or a pause inside the content does not end it early (an
unlimited hangover); only what stays below the threshold up to the end of the file is silence.

A clip's timing error is measurable only when the clip runs on past its requested length: a late
end shows only in audio after seconds_total. A clip that stops at (or before) its request, because
it was trimmed (`sa-train generate` without ``--full-window``) or because the request is as long
as the model's window or longer, can only show an early end, so its error is a figure that cannot
fail; :func:`timing_measurable` says which clips have room (at least MIN_ROOM_SECONDS).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from sa_train.evaluation.audio import as_channels

logger = logging.getLogger(__name__)

DEFAULT_FRAME_SECONDS = 0.01
DEFAULT_RELATIVE_DB = -40.0  # below the loudest frame: a decaying tail or a decoder's noise floor
DEFAULT_ABSOLUTE_DB = -60.0  # dBFS: quieter than this is silence even in a quiet clip
# Audio a clip needs after its requested length for a late end to show: 10 detector frames, and
# under the room the paper's 95 s requests leave in its 95.1 s window.
MIN_ROOM_SECONDS = 0.1


def timing_measurable(requested: float, clip_seconds: float, min_room: float = MIN_ROOM_SECONDS) -> bool:
    """Whether a clip of ``clip_seconds`` can show where content asked to last ``requested`` seconds
    ends: it must run at least ``min_room`` seconds past the request (else a late end cannot show)."""
    return clip_seconds - requested >= min_room - 1e-9


def frame_rms_db(audio: np.ndarray, sr: int, frame_seconds: float = DEFAULT_FRAME_SECONDS) -> np.ndarray:
    """``audio: (channels, samples) or (samples,)`` -> ``(frames,)`` RMS in dBFS over all channels.

    Frames do not overlap; the last one is zero-padded.
    """
    x = as_channels(audio).astype(np.float64)
    hop = max(1, int(round(frame_seconds * sr)))
    frames = max(1, math.ceil(x.shape[1] / hop))
    padded = np.zeros((x.shape[0], frames * hop))
    padded[:, : x.shape[1]] = x
    mean_square = (padded**2).reshape(x.shape[0], frames, hop).mean(axis=(0, 2))
    return 10.0 * np.log10(mean_square + 1e-20)


def detect_content_end(
    audio: np.ndarray,
    sr: int,
    frame_seconds: float = DEFAULT_FRAME_SECONDS,
    relative_db: Optional[float] = DEFAULT_RELATIVE_DB,
    absolute_db: Optional[float] = DEFAULT_ABSOLUTE_DB,
) -> float:
    """Seconds from the start of ``audio: (channels, samples)`` to the end of its content.

    The threshold is ``max(peak_db + relative_db, absolute_db)`` (either may be None to drop
    it); the end is the end of the last frame above it, at most the clip's length. A clip with
    no frame above the threshold (silence) ends at 0.
    """
    if relative_db is None and absolute_db is None:
        raise ValueError("detect_content_end needs relative_db, absolute_db or both")
    if sr <= 0 or frame_seconds <= 0:
        raise ValueError(f"sample rate ({sr}) and frame_seconds ({frame_seconds}) must be positive")
    x = as_channels(audio)
    levels = frame_rms_db(x, sr, frame_seconds)
    thresholds = []
    if relative_db is not None:
        thresholds.append(float(levels.max()) + relative_db)
    if absolute_db is not None:
        thresholds.append(absolute_db)
    above = np.flatnonzero(levels > max(thresholds))
    if above.size == 0:
        return 0.0
    hop = max(1, int(round(frame_seconds * sr)))
    return min((int(above[-1]) + 1) * hop, x.shape[1]) / sr


def default_bins(requested: np.ndarray) -> list[float]:
    """Length-bin edges: 10 s wide for long clips (the paper's scale), 1 s wide for short ones."""
    width = 10.0 if requested.max() >= 20 else 1.0
    lo = math.floor(requested.min() / width) * width
    hi = (math.floor(requested.max() / width) + 1) * width
    return [float(e) for e in np.arange(lo, hi + width / 2, width)]


@dataclass
class TimingBin:
    low: float
    high: float
    count: int
    mae: float  # mean absolute error (s) of the clips whose requested length is in [low, high)
    bias: float  # mean signed error (s): detected - requested

    @property
    def label(self) -> str:
        return f"{self.low:g}-{self.high:g}s"


@dataclass
class TimingReport:
    """Errors of detected against requested content length (seconds; detected - requested)."""

    mae: float
    bias: float
    median_abs_error: float
    max_abs_error: float
    count: int
    bins: list[TimingBin] = field(default_factory=list)
    within_second: float = float("nan")  # fraction ending in the requested second (within_requested_second)

    def to_metrics(self) -> dict[str, float]:
        """Flat metric names, safe for MLflow: ``timing_mae_s``, ``timing_mae_s_1-2s`` ..."""
        metrics = {
            "timing_mae_s": self.mae, "timing_bias_s": self.bias,
            "timing_median_abs_error_s": self.median_abs_error, "timing_max_abs_error_s": self.max_abs_error,
            "timing_num_clips": float(self.count), "timing_within_second_fraction": self.within_second,
        }
        for b in self.bins:
            if b.count:
                metrics[f"timing_mae_s_{b.label}"] = b.mae
        return metrics


# The detector's frames (and a clip's release) blur an end by a fraction of a second.
WITHIN_SECOND_TOLERANCE_S = 0.25


def within_requested_second(
    detected: Sequence[float], requested: Sequence[float], tolerance: float = WITHIN_SECOND_TOLERANCE_S
) -> np.ndarray:
    """(clips,) bool: the content ends in the requested second, the paper's timing question.

    A request of L seconds is conditioned like the files of ``(ceil(L) - 1, ceil(L)]`` seconds (see
    sa_train.models.conditioners.timing.conditioning_seconds), so its end should fall after
    ``ceil(L) - 1`` and by ``L``; ``tolerance`` widens both edges.
    """
    det = np.asarray(detected, dtype=np.float64)
    req = np.asarray(requested, dtype=np.float64)
    lower = np.ceil(req - 1e-4) - 1.0
    return (det > lower - tolerance) & (det <= req + tolerance)


def timing_report(
    detected: Sequence[float], requested: Sequence[float], bins: Optional[Sequence[float]] = None
) -> TimingReport:
    """Overall and per-length-bin errors of ``detected`` against ``requested`` (both ``(clips,)``).

    ``bins`` are ascending edges in seconds of the requested length; the last bin includes its
    upper edge. By default: :func:`default_bins`.
    """
    det = np.asarray(detected, dtype=np.float64)
    req = np.asarray(requested, dtype=np.float64)
    if det.shape != req.shape or det.ndim != 1 or det.size == 0:
        raise ValueError(f"detected and requested must be equal-length, non-empty 1-D; got {det.shape} and {req.shape}")
    edges = np.asarray(default_bins(req) if bins is None else bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"timing bins must be at least 2 ascending edges in seconds; got {list(edges)}")
    errors = det - req
    report = TimingReport(
        mae=float(np.abs(errors).mean()), bias=float(errors.mean()),
        median_abs_error=float(np.median(np.abs(errors))), max_abs_error=float(np.abs(errors).max()),
        count=int(errors.size), within_second=float(within_requested_second(det, req).mean()),
    )
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        last = i == edges.size - 2
        inside = (req >= lo) & ((req <= hi) if last else (req < hi))
        err = errors[inside]
        report.bins.append(TimingBin(float(lo), float(hi), int(err.size),
                                     float(np.abs(err).mean()) if err.size else float("nan"),
                                     float(err.mean()) if err.size else float("nan")))
    outside = int(errors.size - sum(b.count for b in report.bins))
    if outside:
        logger.warning("%d clip(s) have a requested length outside the timing bins %s", outside, list(edges))
    return report


def plot_timing(detected: Sequence[float], requested: Sequence[float], path: str, title: str = "") -> str:
    """Write a PNG scatter of detected against requested length, with the ideal diagonal."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    det = np.asarray(detected, dtype=np.float64)
    req = np.asarray(requested, dtype=np.float64)
    # Figure + Agg canvas directly: no pyplot global state, no display backend needed.
    fig = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    top = float(max(det.max(initial=0), req.max(initial=0))) * 1.05 or 1.0
    ax.plot([0, top], [0, top], color="0.6", linestyle="--", label="detected = requested")
    ax.scatter(req, det, s=18, alpha=0.8, label="clips")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("requested seconds_total (s)")
    ax.set_ylabel("detected end of content (s)")
    ax.set_title(title or "Timing accuracy")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.savefig(path, format="png")
    return path
