"""The run board: a small named Ray actor through which a run's driver and workers share the few
facts that do not belong in a checkpoint.

- rank 0 posts its progress every step (the driver prints one line with rate and ETA);
- rank 0 posts why it stopped early (too many non-finite losses): the workers then return
  normally, so Ray Train's failure policy does not restart a run that would fail the same way, and
  the driver raises the error;
- rank 0 posts where the data stream resumes (the examples already seen): the data pipeline reads
  it when it starts a pass, so a resumed run does not see the same first batches again.
"""

from __future__ import annotations

from typing import Any, Optional

import ray


@ray.remote(num_cpus=0)
class RunBoard:
    def __init__(self) -> None:
        self.progress: dict[str, Any] = {}
        self.stop: Optional[str] = None
        self.data_start = 0

    def post(self, progress: dict[str, Any]) -> None:
        self.progress = progress

    def read(self) -> dict[str, Any]:
        return self.progress

    def post_stop(self, reason: str) -> None:
        self.stop = reason

    def stop_reason(self) -> Optional[str]:
        return self.stop

    def set_data_start(self, row: int) -> None:
        self.data_start = int(row)

    def get_data_start(self) -> int:
        return self.data_start


def create_board(name: str):
    """Driver: the board of one launch (named, so workers and data tasks find it)."""
    return RunBoard.options(name=name).remote()


_FOUND: dict[str, Any] = {}


def find_board(name: Optional[str]):
    """The board called ``name`` (cached per process), or None when there is none."""
    if not name:
        return None
    if name not in _FOUND:
        try:
            _FOUND[name] = ray.get_actor(name)
        except ValueError:
            return None
    return _FOUND[name]
