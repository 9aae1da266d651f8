"""What a person sees while a run trains: one progress line per stage, with rate and ETA.

Rank 0 posts its progress to the run board (:mod:`sa_train.training.run_board`, a fire-and-forget
call per step); the driver polls it and redraws one line in a terminal, or prints a line every few seconds when its
output is a file (CI, `ray job submit` logs). Workers' own output (DeepSpeed, Ray Train, Ray Data)
stays in Ray's log files unless the user asks for it (``--verbose``).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

import ray

from sa_train.training.progress import format_duration


def progress_line(label: str, progress: dict[str, Any], elapsed: float) -> str:
    """One line: label, step/total with a bar, loss, rate, elapsed and ETA."""
    if not progress:
        return f"{label}: starting workers ... {format_duration(elapsed)}"
    step, total = int(progress["step"]), max(1, int(progress["total"]))
    filled = int(20 * step / total)
    bar = "#" * filled + "." * (20 - filled)
    return (
        f"{label}: [{bar}] step {step}/{total}  loss {progress['loss']:.4f}  "
        f"{progress['step_time']:.2f} s/step  elapsed {format_duration(elapsed)}  "
        f"ETA {format_duration(progress['eta'])}"
    )


def plain_tenth(progress: dict[str, Any]) -> int:
    """Which tenth of the run the progress is in (-1 before the first step)."""
    if not progress:
        return -1
    return min(10, int(10 * int(progress["step"]) / max(1, int(progress["total"]))))


class ProgressPrinter:
    """Driver side: polls the board in a thread and prints the stage's progress line.

    Used as a context manager around ``trainer.fit()``; prints the final line on exit.
    """

    def __init__(self, board, label: str, stream: TextIO = sys.stdout, every_s: float = 1.0,
                 plain_every_s: float = 60.0) -> None:
        self.board = board
        self.label, self.stream = label, stream
        self.every_s, self.plain_every_s = every_s, plain_every_s
        self.interactive = bool(getattr(stream, "isatty", lambda: False)())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.perf_counter()
        self._last: dict[str, Any] = {}

    def _read(self) -> dict[str, Any]:
        try:
            return ray.get(self.board.read.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - a slow poll only delays the line
            return self._last

    def _run(self) -> None:
        printed_tenth, last_plain = -1, 0.0
        while not self._stop.wait(self.every_s):
            self._last = self._read()
            elapsed = time.perf_counter() - self._started
            line = progress_line(self.label, self._last, elapsed)
            if self.interactive:
                self.stream.write("\r" + line[:160] + "\033[K")
                self.stream.flush()
                continue
            # Into a file: a line at each tenth of the run (and while waiting, one a minute), so
            # a slow run's log stays about ten lines a stage.
            tenth = plain_tenth(self._last)
            if tenth > printed_tenth or (tenth < 0 and elapsed - last_plain >= self.plain_every_s):
                printed_tenth, last_plain = tenth, elapsed
                self.stream.write(line + "\n")
                self.stream.flush()

    def __enter__(self) -> "ProgressPrinter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._last = self._read()
        line = progress_line(self.label, self._last, time.perf_counter() - self._started)
        self.stream.write(("\r" + line + "\033[K\n") if self.interactive else line + "\n")
        self.stream.flush()
