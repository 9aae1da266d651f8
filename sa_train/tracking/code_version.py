"""The git commit of the code a run executes, recorded as the MLflow tag ``git_commit``.

Under `ray job submit` the driver runs in the uploaded copy of the checkout, where the `git`
binary may be missing or refuse the folder (another owner). So the commit is read, in order:

1. ``SA_TRAIN_GIT_COMMIT``: set by the first driver for every Ray process it starts (see
   :mod:`sa_train.ray_session`), or by the user for a copy without ``.git`` (a Docker image);
2. ``git rev-parse HEAD`` from the package's folder;
3. the ``.git`` folder itself (HEAD, loose refs, packed-refs), which Ray uploads with the
   working dir: no `git` binary needed.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Optional

GIT_COMMIT_ENV = "SA_TRAIN_GIT_COMMIT"
UNKNOWN = "unknown"
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")  # SHA-1 or SHA-256


def git_commit(start: Optional[Path] = None) -> str:
    """The commit of the checkout holding ``start`` (default: this package), or "unknown"."""
    if os.environ.get(GIT_COMMIT_ENV):
        return os.environ[GIT_COMMIT_ENV]
    start = Path(start or Path(__file__).parent).resolve()
    return _from_git_binary(start) or _from_git_folder(start) or UNKNOWN


def _from_git_binary(start: Path) -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=start)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and _SHA.match(commit) else None


def _from_git_folder(start: Path) -> Optional[str]:
    git_dir = _find_git_dir(start)
    if git_dir is None:
        return None
    head = (git_dir / "HEAD").read_text().strip()
    if not head.startswith("ref: "):
        return head if _SHA.match(head) else None  # a detached HEAD holds the commit itself
    ref = head[len("ref: "):]
    common = _common_dir(git_dir)
    for folder in (git_dir, common):
        loose = folder / ref
        if loose.is_file():
            return loose.read_text().strip()
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            parts = line.split(" ")
            if len(parts) == 2 and parts[1] == ref and _SHA.match(parts[0]):
                return parts[0]
    return None


def _find_git_dir(start: Path) -> Optional[Path]:
    for folder in (start, *start.parents):
        dot_git = folder / ".git"
        if dot_git.is_dir():
            return dot_git
        if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = dot_git.read_text().strip()
            if text.startswith("gitdir: "):
                return (folder / text[len("gitdir: "):]).resolve()
    return None


def _common_dir(git_dir: Path) -> Path:
    """Where refs shared by all worktrees live (the git dir itself outside worktrees)."""
    pointer = git_dir / "commondir"
    return (git_dir / pointer.read_text().strip()).resolve() if pointer.is_file() else git_dir
