"""`sa-train data check`: scan a corpus once, report what is in it, write a clean manifest.

Every file is opened and (by default) fully decoded in blocks in parallel Ray tasks, which finds
what a training crop may miss: a cut FLAC stream, NaN samples late in a file, a file that is
silent throughout. The good files go into a JSONL manifest (path, duration, sample_rate,
channels, caption and fields) that training reads directly, so the scan is done once.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union


from sa_train.data.bad_files import BadFileCounter, check_bad_fraction
from sa_train.data.decode import SILENCE_PEAK, BadFile, Reason, _Bad, finite_peak, open_soundfile, read_frames
from sa_train.data.sources import AudioRecord

logger = logging.getLogger(__name__)

BLOCK_FRAMES = 1 << 20  # frames decoded at a time in a full scan: ~8 MB of stereo float32
QUICK_FRAMES = 4096  # frames read at each end of a file in a quick scan
FILES_PER_TASK = 32
# Duration histogram edges (seconds); 95.1 s is the paper's training window.
DURATION_EDGES = (1.0, 5.0, 10.0, 30.0, 60.0, 95.1, 300.0, 600.0)


@dataclass
class FileReport:
    """A good file: what training needs to know about it."""

    path: str
    duration: float
    sample_rate: int
    channels: int
    format: str
    subtype: str
    caption: Optional[str] = None
    fields: dict[str, Any] = field(default_factory=dict)

    def manifest_row(self) -> dict[str, Any]:
        row = {"path": self.path, "caption": self.caption}
        row.update(self.fields)
        row.update(duration=round(self.duration, 4), sample_rate=self.sample_rate, channels=self.channels)
        return row


def probe_file(record: AudioRecord, *, min_seconds: float, full: bool = True) -> Union[FileReport, BadFile]:
    """Validate one file: header, then every sample (``full``) or only both ends (quick)."""
    try:
        with open_soundfile(record.path) as sound:
            frames, rate = sound.frames, sound.samplerate
            if frames / rate < min_seconds:
                return BadFile(record.path, Reason.TOO_SHORT, f"{frames / rate:.3f} s < min_seconds={min_seconds}")
            if full:
                spans = [(s, min(BLOCK_FRAMES, frames - s)) for s in range(0, frames, BLOCK_FRAMES)]
            else:
                spans = [(0, min(QUICK_FRAMES, frames)), (max(0, frames - QUICK_FRAMES), min(QUICK_FRAMES, frames))]
            peak = 0.0
            for start, count in spans:
                block_peak = finite_peak(read_frames(sound, start, count))
                if math.isnan(block_peak):
                    return BadFile(record.path, Reason.NON_FINITE, f"NaN or Inf samples in frames {start}..{start + count}")
                peak = max(peak, block_peak)
            if full and peak < SILENCE_PEAK:
                return BadFile(record.path, Reason.SILENT, f"peak {peak:.2e} below {SILENCE_PEAK} over the whole file")
            return FileReport(
                record.path, frames / rate, rate, sound.channels, sound.format, sound.subtype, record.caption, dict(record.fields)
            )
    except _Bad as bad:
        return BadFile(record.path, bad.reason, bad.detail)


def _probe_chunk(records: Sequence[AudioRecord], min_seconds: float, full: bool) -> list:
    return [probe_file(r, min_seconds=min_seconds, full=full) for r in records]


@dataclass
class CheckReport:
    """The result of a scan: good files (in source order) and bad files."""

    files: list[FileReport]
    bad: list[BadFile]

    @property
    def total(self) -> int:
        return len(self.files) + len(self.bad)

    @property
    def bad_fraction(self) -> float:
        return len(self.bad) / self.total if self.total else 0.0

    @property
    def hours(self) -> float:
        return sum(f.duration for f in self.files) / 3600

    def bad_by_reason(self) -> dict[str, list[BadFile]]:
        out: dict[str, list[BadFile]] = {}
        for bad in self.bad:
            out.setdefault(bad.reason, []).append(bad)
        return dict(sorted(out.items(), key=lambda kv: (-len(kv[1]), kv[0])))

    def duration_histogram(self) -> list[tuple[str, int]]:
        counts = Counter(bisect.bisect_right(DURATION_EDGES, f.duration) for f in self.files)
        labels = [f"< {DURATION_EDGES[0]:g} s"]
        labels += [f"{a:g}-{b:g} s" for a, b in zip(DURATION_EDGES, DURATION_EDGES[1:])]
        labels.append(f">= {DURATION_EDGES[-1]:g} s")
        return [(label, counts.get(i, 0)) for i, label in enumerate(labels)]

    def check(self, max_bad_fraction: float) -> None:
        """Raise BadDataError when the bad fraction is above the limit."""
        by_reason = self.bad_by_reason()
        check_bad_fraction(
            {r: len(b) for r, b in by_reason.items()}, self.total, max_bad_fraction,
            {r: [x.path for x in b] for r, b in by_reason.items()},
        )

    def bad_counter(self) -> BadFileCounter:
        counter = BadFileCounter(log_examples=False, seen=len(self.files))
        for bad in self.bad:
            counter.add_bad(bad)
        return counter


def check_records(
    records: Sequence[AudioRecord],
    *,
    min_seconds: float = 0.5,
    full: bool = True,
    use_ray: bool = True,
    files_per_task: int = FILES_PER_TASK,
    max_in_flight: Optional[int] = None,
    progress: bool = True,
) -> CheckReport:
    """Probe every record, in parallel Ray tasks (``use_ray``, at most ``max_in_flight`` at a
    time; default: as many as Ray schedules) or in this process."""
    chunks = [records[i : i + files_per_task] for i in range(0, len(records), files_per_task)]
    results: list[list] = [[] for _ in chunks]
    bar = _progress(len(records), progress)
    if use_ray and chunks:
        import ray

        from sa_train.ray_session import ensure_ray

        ensure_ray()
        probe = ray.remote(num_cpus=1)(_probe_chunk)
        limit = max_in_flight or len(chunks)
        refs: dict = {}
        next_chunk = 0
        while next_chunk < len(chunks) or refs:
            while next_chunk < len(chunks) and len(refs) < limit:
                refs[probe.remote(chunks[next_chunk], min_seconds, full)] = next_chunk
                next_chunk += 1
            done, _ = ray.wait(list(refs), num_returns=1)
            i = refs.pop(done[0])
            results[i] = ray.get(done[0])
            bar(len(results[i]))
    else:
        for i, chunk in enumerate(chunks):
            results[i] = _probe_chunk(chunk, min_seconds, full)
            bar(len(chunk))
    flat = [r for chunk in results for r in chunk]
    return CheckReport(
        files=[r for r in flat if isinstance(r, FileReport)], bad=[r for r in flat if isinstance(r, BadFile)]
    )


def _progress(total: int, enabled: bool):
    """A callback advancing a tqdm bar on stderr, or logging every ~10 s when tqdm is off."""
    if enabled:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="file", desc="checking", leave=False)

        def advance(n: int) -> None:
            bar.update(n)
            if bar.n >= total:
                bar.close()

        return advance
    state = {"done": 0, "last": time.monotonic()}

    def log_progress(n: int) -> None:
        state["done"] += n
        if time.monotonic() - state["last"] > 10 or state["done"] == total:
            state["last"] = time.monotonic()
            logger.info("checked %d / %d files", state["done"], total)

    return log_progress


def format_report(report: CheckReport, max_paths: int = 20) -> str:
    """A human summary: counts, hours, rates, channels, durations, captions, bad files with paths."""
    lines = [
        f"files: {report.total} ({len(report.files)} good, {len(report.bad)} bad = {report.bad_fraction:.2%})",
        f"total audio: {report.hours:.2f} hours",
        "sample rates: " + ", ".join(f"{r} Hz x {n}" for r, n in sorted(Counter(f.sample_rate for f in report.files).items())),
        "channels: " + ", ".join(f"{c} ch x {n}" for c, n in sorted(Counter(f.channels for f in report.files).items())),
        "durations:",
    ]
    histogram = report.duration_histogram()
    widest = max((n for _, n in histogram), default=0) or 1
    lines += [f"  {label:>12}  {n:6d}  {'#' * math.ceil(40 * n / widest) if n else ''}" for label, n in histogram]
    missing = sum(not f.caption for f in report.files)
    lines.append(f"captions missing: {missing} of {len(report.files)} good files")
    by_reason = report.bad_by_reason()
    if by_reason:
        lines.append("bad files by reason:")
        for reason, bads in by_reason.items():
            lines.append(f"  {reason}: {len(bads)}")
            lines += [f"    {b.path}: {b.detail}" for b in bads[:max_paths]]
            if len(bads) > max_paths:
                lines.append(f"    ... and {len(bads) - max_paths} more")
    return "\n".join(lines)


def write_manifest(report: CheckReport, out: str) -> None:
    """Write the good files as JSONL (path, caption, fields, duration, sample_rate, channels)."""
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    temp = f"{out}.tmp-{os.getpid()}"
    with open(temp, "w", encoding="utf-8") as f:
        for file in report.files:
            f.write(json.dumps(file.manifest_row(), sort_keys=True) + "\n")
    os.replace(temp, out)
    logger.info("wrote %d good files to %s", len(report.files), out)
