"""The git commit reaches runs submitted with `ray job submit`: it is read from the uploaded .git
folder without a `git` binary, and the driver hands it to every Ray process it starts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sa_train.tracking.code_version import GIT_COMMIT_ENV, git_commit

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture
def no_git_binary(monkeypatch, tmp_path):
    """A node image without `git`, and no commit handed down by a driver."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.delenv(GIT_COMMIT_ENV, raising=False)


def uploaded_checkout(root: Path, head: str, refs: dict[str, str] | None = None, packed: str = "") -> Path:
    """A working dir as Ray unpacks it: the checkout's files and its .git folder."""
    package = root / "sa_train" / "tracking"
    package.mkdir(parents=True)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text(head + "\n")
    for ref, sha in (refs or {}).items():
        (root / ".git" / ref).parent.mkdir(parents=True, exist_ok=True)
        (root / ".git" / ref).write_text(sha + "\n")
    if packed:
        (root / ".git" / "packed-refs").write_text(packed)
    return package


def test_the_commit_is_read_from_an_uploaded_git_folder_without_a_git_binary(tmp_path, no_git_binary):
    loose = uploaded_checkout(tmp_path / "loose", "ref: refs/heads/main", {"refs/heads/main": COMMIT})
    assert git_commit(loose) == COMMIT
    packed = uploaded_checkout(tmp_path / "packed", "ref: refs/heads/main",
                               packed=f"# pack-refs with: peeled fully-peeled sorted\n{OTHER} refs/heads/dev\n"
                                      f"{COMMIT} refs/heads/main\n")
    assert git_commit(packed) == COMMIT
    assert git_commit(uploaded_checkout(tmp_path / "detached", OTHER)) == OTHER
    assert git_commit(tmp_path / "loose" / "..") == "unknown"  # no .git above tmp_path


def test_a_commit_handed_down_by_the_driver_wins(tmp_path, monkeypatch):
    monkeypatch.setenv(GIT_COMMIT_ENV, OTHER)
    assert git_commit(uploaded_checkout(tmp_path, "ref: refs/heads/main", {"refs/heads/main": COMMIT})) == OTHER


def test_this_checkouts_commit_agrees_with_git(monkeypatch):
    monkeypatch.delenv(GIT_COMMIT_ENV, raising=False)
    if shutil.which("git") is None:
        pytest.skip("no git binary")
    root = Path(__file__).resolve().parents[2]
    expected = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=root).stdout.strip()
    if not expected:
        pytest.skip("not a git checkout")
    assert git_commit() == expected
    monkeypatch.setenv("PATH", "")
    assert git_commit() == expected  # the same, read from .git without the binary


@pytest.mark.parametrize("ray_address", [None, "ray://head:10001"], ids=["local", "cluster"])
def test_the_driver_hands_its_commit_to_every_ray_process(monkeypatch, ray_address):
    import ray

    from sa_train import ray_session

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setenv(GIT_COMMIT_ENV, COMMIT)
    if ray_address:
        monkeypatch.setenv("RAY_ADDRESS", ray_address)
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    ray_session.ensure_ray()
    assert calls[0]["runtime_env"]["env_vars"][GIT_COMMIT_ENV] == COMMIT
