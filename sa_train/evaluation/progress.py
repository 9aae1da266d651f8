"""Progress over the clips of an evaluation: embedding on a CPU can take minutes per folder."""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int, desc: str, enabled: Optional[bool] = None) -> Iterator[T]:
    """``items`` with a tqdm bar on stderr (clips done, rate, time left); ``enabled=None``: only when
    stderr is a terminal (the CLI passes True, so logs of cluster jobs show it too)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, total=total, desc=desc, unit="clip", file=sys.stderr, mininterval=1.0, leave=False)
