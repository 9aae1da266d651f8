"""Joining or starting Ray: one entry point serves a laptop and a cluster.

Under `ray job submit`, or with RAY_ADDRESS set, we join that cluster. Otherwise we start a local
instance sized so Ray Train workers and Ray Data tasks can run side by side (logical CPUs may
exceed the physical ones: data tasks are mostly waiting on I/O and decoding).
"""

from __future__ import annotations

import json
import logging
import os

logger = logging.getLogger(__name__)

# Ray's raylet warns on the terminal once 4x its startup concurrency (the physical CPU count) of
# Python workers exist. A run here has 8-12 by design (2 train workers, the train controller, the
# run board, Ray Data's coordinator and tasks), so on a 2-core laptop the warning came with every
# run and said nothing. A local instance on a small machine may start 4 workers at once; Ray then
# warns from 16 workers on. A value the user sets is kept.
STARTUP_CONCURRENCY_ENV = "RAY_worker_maximum_startup_concurrency"
MIN_STARTUP_CONCURRENCY = 4


def ensure_ray(min_cpus: float = 0, quiet: bool = False) -> None:
    """Connect to the cluster in RAY_ADDRESS, or start a local Ray instance with >= min_cpus CPUs.

    ``quiet``: workers' output (DeepSpeed, Ray Train, Ray Data progress bars) stays in Ray's log
    files (:func:`ray_log_folder`) instead of being copied to this terminal.
    """
    import ray

    if ray.is_initialized():
        return
    if quiet:
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False
    address = os.environ.get("RAY_ADDRESS")
    # Workers import sa_train from the driver's working tree, and write nothing to the repo.
    runtime_env = {"env_vars": {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
                                **_code_version_env()}}
    if address:
        logger.info("joining the Ray cluster at %s", address)
        # Under `ray job submit`, Ray refuses a driver runtime_env that repeats a key of the job's own
        # (cluster/runtime_env.yaml sets PYTHONUNBUFFERED), and the job's values are already applied.
        job_env = _job_env_vars()
        env_vars = {k: v for k, v in runtime_env["env_vars"].items() if k not in job_env}
        ray.init(address=address, runtime_env={"env_vars": env_vars} if env_vars else None, log_to_driver=not quiet,
                 logging_level=logging.WARNING if quiet else logging.INFO)
        return
    num_cpus = max(os.cpu_count() or 1, int(min_cpus + 0.999) + 2)
    if (os.cpu_count() or 1) < MIN_STARTUP_CONCURRENCY:
        os.environ.setdefault(STARTUP_CONCURRENCY_ENV, str(MIN_STARTUP_CONCURRENCY))  # read by the raylet
    logger.info("starting a local Ray instance with %d logical CPUs", num_cpus)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env,
             log_to_driver=not quiet, logging_level=logging.WARNING if quiet else logging.INFO)


def _code_version_env() -> dict[str, str]:
    """The driver's git commit for every process it starts (sweep trials, Ray Train workers), which
    may run where the checkout's .git cannot be read."""
    from sa_train.tracking.code_version import GIT_COMMIT_ENV, UNKNOWN, git_commit

    commit = git_commit()
    return {GIT_COMMIT_ENV: commit} if commit != UNKNOWN else {}


def ray_log_folder() -> str:
    """Where this Ray session writes its logs (workers' stdout and stderr among them)."""
    import ray

    try:
        return ray.get_runtime_context().get_node_info().get("log_dir") or "/tmp/ray/session_latest/logs"
    except Exception:  # noqa: BLE001 - only used to tell the user where to look
        return "/tmp/ray/session_latest/logs"


def _job_env_vars() -> dict:
    """The env_vars of the runtime env that `ray job submit` gave this driver ({} outside a job)."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return {}
    return (json.loads(raw).get("runtime_env") or {}).get("env_vars") or {}
