"""Joining or starting Ray: one entry point serves a laptop and a cluster.

Under `ray job submit`, or with RAY_ADDRESS set, we join that cluster. Otherwise we start a local
instance sized so Ray Train workers and Ray Data tasks can run side by side (logical CPUs may
exceed the physical ones: data tasks are mostly waiting on I/O and decoding).
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def ensure_ray(min_cpus: float = 0) -> None:
    """Connect to the cluster in RAY_ADDRESS, or start a local Ray instance with >= min_cpus CPUs."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    # Workers import sa_train from the driver's working tree, and write nothing to the repo.
    runtime_env = {"env_vars": {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}}
    if address:
        logger.info("joining the Ray cluster at %s", address)
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
        return
    num_cpus = max(os.cpu_count() or 1, int(min_cpus + 0.999) + 2)
    logger.info("starting a local Ray instance with %d logical CPUs", num_cpus)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env, log_to_driver=True)
