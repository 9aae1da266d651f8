"""Starting a local Ray instance: what a laptop user sees on the terminal."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import sa_train.ray_session as ray_session

WARNING = "worker processes have been started"

# A driver on a machine that reports 2 cores (as the project's laptop target and CI do) starts a
# local Ray through sa_train and then as many Python workers as a training run has (train workers,
# controller, run board, Ray Data's coordinator and tasks), with room to spare.
SCRIPT = textwrap.dedent("""
    import multiprocessing, os, time
    os.cpu_count = lambda: 2
    multiprocessing.cpu_count = lambda: 2
    import ray
    from sa_train.ray_session import ensure_ray

    ensure_ray(quiet=True)

    @ray.remote(num_cpus=0)
    class Worker:
        def pid(self):
            return os.getpid()

    workers = [Worker.remote() for _ in range(14)]
    print(len(set(ray.get([w.pid.remote() for w in workers]))), "workers up", flush=True)
    time.sleep(3)  # the raylet's warning reaches the driver asynchronously
    ray.shutdown()
""")


def run_driver(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", ray_session.STARTUP_CONCURRENCY_ENV)}
    env.update(env_extra, PYTHONPATH=os.getcwd(), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "14 workers up" in out, out[-3000:]
    return out


def test_a_local_run_on_two_cores_does_not_print_rays_worker_count_warning():
    out = run_driver({})
    assert WARNING not in out, out[-3000:]


def test_a_startup_concurrency_the_user_sets_is_kept(monkeypatch):
    """With the user's own value (Ray's default on 2 cores) the raylet warns again: the setting
    is what silences it, and sa_train does not override it."""
    out = run_driver({ray_session.STARTUP_CONCURRENCY_ENV: "2"})
    assert WARNING in out, out[-3000:]


@pytest.mark.parametrize("cores, expected", [(2, "4"), (1, "4"), (8, None)])
def test_only_small_machines_get_the_higher_startup_concurrency(monkeypatch, cores, expected):
    import ray

    seen = {}
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(ray_session.STARTUP_CONCURRENCY_ENV, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(env=os.environ.get(ray_session.STARTUP_CONCURRENCY_ENV)))
    ray_session.ensure_ray()
    assert seen["env"] == expected
