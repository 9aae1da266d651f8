"""Config of the worker group and DeepSpeed (section ``distributed``), owned by this package."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sa_train.config.fields import param


@dataclass
class DistributedConfig:
    """How many Ray Train workers, on what hardware, with which DeepSpeed ZeRO settings."""

    num_workers: int = param(2, "Ray Train workers (one per GPU on a GPU cluster; paper: 64)", min=1)
    num_nodes: int = param(
        0,
        "nodes the workers run on: 0 = judge from the Ray cluster (one only when the driver's node is the only node "
        "whose CPUs and GPUs can host a worker, and holds all num_workers); set it when that judgement is wrong. "
        "A multi-node run needs storage.path and tracking.uri that every node reaches",
        min=0,
    )
    device: str = param("auto", "'auto' (GPU when the cluster has one), 'cpu' or 'gpu'", choices=["auto", "cpu", "gpu"])
    cpus_per_worker: float = param(1.0, "CPUs reserved per worker", min=0)
    gpus_per_worker: float = param(1.0, "GPUs reserved per worker when device is gpu", min=0)
    zero_stage: int = param(2, "DeepSpeed ZeRO stage (0, 1, 2 or 3)", choices=[0, 1, 2, 3])
    offload_optimizer: str = param("none", "offload optimizer states: 'none' or 'cpu'", choices=["none", "cpu"])
    offload_params: str = param("none", "offload parameters (ZeRO-3 only): 'none' or 'cpu'", choices=["none", "cpu"])
    gradient_reduce_dtype: str = param(
        "fp32",
        "dtype gradients are summed in across workers under bf16/fp16 (DeepSpeed communication_data_type): 'fp32' "
        "(exact sums over many ranks; twice the traffic of bf16) or 'precision' (the training precision, DeepSpeed's "
        "default); fp32 training always reduces in fp32",
        choices=["fp32", "precision"],
    )
    deepspeed_config: Optional[str] = param(
        None, "JSON file merged over the DeepSpeed config built from this config (for experts)"
    )
    max_failures: int = param(1, "worker-group restarts from the last checkpoint before the run fails; -1 = unlimited", min=-1)
