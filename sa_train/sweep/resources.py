"""What one trial holds, and how many trials fit on the cluster at once.

With Ray Train V2 a trial is a plain function (the trial's driver) that builds a TorchTrainer; the
trainer reserves its workers in a placement group of its own. Tune therefore reserves only the
driver's resources for a trial, and the sweep caps concurrency itself: if Tune started more
trials than the cluster can give workers to, each would hold its driver and wait forever for
workers the others hold. Ray Data's decoding tasks need free CPUs beside the workers, so a
trial also counts ``data_cpus``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from sa_train.config.fields import ConfigError
from sa_train.sweep.config import TrialResourcesConfig


@dataclass(frozen=True)
class TrialResources:
    """Resources of one trial: its driver, its Ray Train workers and room for its data tasks."""

    workers: int
    cpus_per_worker: float
    gpus_per_worker: float  # 0 when the workers train on CPU
    driver_cpus: float
    driver_gpus: float
    data_cpus: float

    @property
    def cpus(self) -> float:
        return self.driver_cpus + self.workers * self.cpus_per_worker + self.data_cpus

    @property
    def gpus(self) -> float:
        return self.driver_gpus + self.workers * self.gpus_per_worker

    def driver_request(self) -> dict[str, float]:
        """What Tune reserves for the trial's function (the workers reserve their own)."""
        return {"CPU": self.driver_cpus, "GPU": self.driver_gpus}

    def describe(self) -> str:
        gpu = f" + {self.workers} x {self.gpus_per_worker:g} GPU" if self.gpus_per_worker else ""
        return (f"{self.cpus:g} CPU / {self.gpus:g} GPU per trial: driver {self.driver_cpus:g} CPU"
                f"{f' {self.driver_gpus:g} GPU' if self.driver_gpus else ''}, {self.workers} workers x "
                f"{self.cpus_per_worker:g} CPU{gpu}, data tasks {self.data_cpus:g} CPU")


def uses_gpu(device: str, cluster: Mapping[str, float]) -> bool:
    """As the launcher decides: 'gpu', or 'auto' on a cluster with GPUs."""
    return device == "gpu" or (device == "auto" and cluster.get("GPU", 0) > 0)


def trial_resources(configs: Iterable, settings: TrialResourcesConfig, cluster: Mapping[str, float]) -> TrialResources:
    """The largest needs over the trial configs (a sweep may search distributed.num_workers)."""
    needs = None
    for cfg in configs:
        dist = cfg.distributed
        gpu = uses_gpu(dist.device, cluster)
        candidate = TrialResources(
            dist.num_workers, dist.cpus_per_worker, dist.gpus_per_worker if gpu else 0.0,
            settings.driver_cpus, settings.driver_gpus, settings.data_cpus,
        )
        if needs is None or (candidate.gpus, candidate.cpus) > (needs.gpus, needs.cpus):
            needs = candidate
    if needs is None:
        raise ValueError("trial_resources needs at least one trial config")
    return needs


def fitting_trials(needs: TrialResources, cluster: Mapping[str, float]) -> Optional[int]:
    """How many trials the cluster holds at once (None when a trial needs nothing); 0 if not one."""
    limits = []
    for resource, amount in (("CPU", needs.cpus), ("GPU", needs.gpus)):
        if amount > 0:
            limits.append(math.floor(cluster.get(resource, 0.0) / amount + 1e-9))
    return min(limits) if limits else None


def max_concurrent_trials(needs: TrialResources, cluster: Mapping[str, float], requested: Optional[int]) -> int:
    """Trials to run at once: ``requested`` when given (an autoscaling cluster may grow into it),
    else as many as fit now. Raises ConfigError when not even one trial fits and none was requested."""
    fits = fitting_trials(needs, cluster)
    if requested is not None:
        return requested
    if fits is None:
        return 1
    if fits < 1:
        have = f"{cluster.get('CPU', 0):g} CPU / {cluster.get('GPU', 0):g} GPU"
        raise ConfigError(
            f"one trial needs {needs.describe()}, but the cluster has {have}; lower distributed.num_workers or "
            f"resources_per_trial, or set max_concurrent_trials on an autoscaling cluster")
    return fits
