"""Config of the worker group and DeepSpeed (section ``distributed``), owned by this package."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sa_train.config.fields import param


@dataclass
class DistributedConfig:
    """How many Ray Train workers, on what hardware, with which DeepSpeed ZeRO settings."""

    num_workers: int = param(2, "Ray Train workers (one per GPU on a GPU cluster; paper: 64)", min=1)
    device: str = param("auto", "'auto' (GPU when the cluster has one), 'cpu' or 'gpu'", choices=["auto", "cpu", "gpu"])
    cpus_per_worker: float = param(1.0, "CPUs reserved per worker", min=0)
    gpus_per_worker: float = param(1.0, "GPUs reserved per worker when device is gpu", min=0)
    zero_stage: int = param(2, "DeepSpeed ZeRO stage (0, 1, 2 or 3)", choices=[0, 1, 2, 3])
    offload_optimizer: str = param("none", "offload optimizer states: 'none' or 'cpu'", choices=["none", "cpu"])
    offload_params: str = param("none", "offload parameters (ZeRO-3 only): 'none' or 'cpu'", choices=["none", "cpu"])
    deepspeed_config: Optional[str] = param(
        None, "JSON file merged over the DeepSpeed config built from this config (for experts)"
    )
    max_failures: int = param(1, "worker-group restarts from the last checkpoint before the run fails; -1 = unlimited", min=-1)
