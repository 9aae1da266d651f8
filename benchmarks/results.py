"""Where every benchmark records its figures: printed, and appended as one dated line to RESULTS.md."""

from __future__ import annotations

import os
import platform

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def record(entry: str, append: bool = True) -> None:
    print(entry)
    if append:
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(entry + "\n")


def cpu_model() -> str:
    """The CPU's model name, to label a result row with the machine it ran on."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
