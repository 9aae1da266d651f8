"""Where every benchmark records its figures: printed, and appended as one dated line to RESULTS.md."""

from __future__ import annotations

import os

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def record(entry: str, append: bool = True) -> None:
    print(entry)
    if append:
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(entry + "\n")
