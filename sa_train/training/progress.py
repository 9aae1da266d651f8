"""Progress of a training run: rates over a sliding window and an ETA, as one log line."""

from __future__ import annotations

import time
from collections import deque


def format_duration(seconds: float) -> str:
    if seconds != seconds or seconds < 0:  # NaN: no rate yet
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


class ProgressMeter:
    """Steps/s, samples/s and audio-seconds/s over the last ``window`` steps, and the ETA."""

    def __init__(self, total_steps: int, start_step: int = 0, window: int = 20):
        self.total_steps = total_steps
        self.marks: deque[tuple[float, int, float]] = deque(maxlen=window + 1)  # (time, step, samples)
        self.marks.append((time.perf_counter(), start_step, 0.0))
        self.samples = 0.0
        self.step_time = float("nan")
        self._warm_up = True

    def update(self, step: int, samples: int, seconds_per_example: float) -> dict[str, float]:
        self.samples += samples
        self.marks.append((time.perf_counter(), step, self.samples))
        (t0, s0, n0), (t1, s1, n1) = self.marks[0], self.marks[-1]
        if len(self.marks) == 2 and self._warm_up:
            # The first step carries the start-up (data pipeline, first gradient buckets): its time
            # is reported, but the window and the ETA start after it.
            self._warm_up = False
            self.marks.popleft()
        elapsed = max(t1 - t0, 1e-9)
        self.step_time = elapsed / max(s1 - s0, 1)
        samples_per_s = (n1 - n0) / elapsed
        return {
            "perf/step_time_s": self.step_time,
            "perf/samples_per_s": samples_per_s,
            "perf/audio_seconds_per_s": samples_per_s * seconds_per_example,
        }

    def eta_seconds(self, step: int) -> float:
        """Seconds left at the current rate; NaN until a step after the first has been timed."""
        if len(self.marks) < 2:
            return float("nan")
        return max(0, self.total_steps - step) * self.step_time

    def line(self, step: int, loss: float) -> str:
        eta = self.eta_seconds(step)
        (t0, s0, n0), (t1, s1, n1) = self.marks[0], self.marks[-1]
        rate = (n1 - n0) / max(t1 - t0, 1e-9)
        return (
            f"step {step}/{self.total_steps} loss {loss:.4f} | {rate:.1f} samples/s | "
            f"{self.step_time:.3f} s/step | ETA {format_duration(eta)}"
        )


class IntervalMeans:
    """The mean of each metric over the optimizer steps since the last log.

    With log_every in the hundreds, one step's loss (a micro-batch of a few examples) says little:
    the curves and the log line report the interval's mean instead. Metrics are already averaged over
    the ranks at each step, so this costs nothing collective.
    """

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def add(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
            self._counts[key] = self._counts.get(key, 0) + 1

    def take(self) -> dict[str, float]:
        """The means since the last call, and start a new interval."""
        means = {key: total / self._counts[key] for key, total in self._sums.items()}
        self._sums, self._counts = {}, {}
        return means
