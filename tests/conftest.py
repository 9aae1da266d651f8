"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """The suite's one local Ray instance: 4 logical CPUs (2 training workers + data tasks),
    isolated from the user's ~/.ray and any RAY_ADDRESS. One per session: Ray allows one per process."""
    ray = pytest.importorskip("ray")
    import ray.data

    home = tmp_path_factory.mktemp("ray_home")
    patch = pytest.MonkeyPatch()
    patch.setenv("HOME", str(home))  # Ray's token file goes here, not into the real home
    patch.delenv("RAY_ADDRESS", raising=False)
    patch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    # Workers import the test helpers and test modules (encoder factories) by name.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = (os.path.join(root, "tests", "data"), root, os.environ.get("PYTHONPATH"))
    patch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
    patch.undo()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def spawn_ranks():
    """``spawn_ranks(worker, nprocs, *args)`` runs ``worker(rank, port, *args)`` in ``nprocs``
    spawned processes (a free local port for their gloo group) and waits for all of them."""
    import torch.multiprocessing as mp

    def run(worker, nprocs: int, *args) -> None:
        mp.start_processes(worker, args=(_free_port(), *args), nprocs=nprocs, join=True, start_method="spawn")

    return run


@pytest.fixture(scope="session")
def lock_pins():
    """``lock_pins("requirements-dev.lock") -> {package: version}``: the exact pins of one of the
    repository's lock files (names lower-cased, extras and comments dropped)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]

    def read(name: str) -> dict[str, str]:
        pins = {}
        for line in (root / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if "==" in line:
                package, version = line.split("==")
                pins[package.split("[")[0].lower()] = version.split(";")[0].strip()
        return pins

    return read
