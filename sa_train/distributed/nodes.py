"""Whether a run's workers may leave the driver's node, and the shared storage such a run needs.

Judged on the driver before any worker starts. A multi-node run with a local ``storage.path``
would leave each node's checkpoint shards on that node's disk (where the driver cannot export
them), and a SQLite or file MLflow store would be a different, empty store on rank 0's node:
both are refused with what to use instead.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional
from urllib.parse import urlparse

from sa_train.config import ConfigError, ExperimentConfig

LOCAL_MLFLOW_SCHEMES = ("", "file", "sqlite")


def workers_per_node(node: Mapping[str, float], per_worker: Mapping[str, float]) -> int:
    """How many workers needing ``per_worker`` (e.g. {"CPU": 8, "GPU": 1}) one node's total resources hold."""
    counts = [math.floor(node.get(name, 0) / amount + 1e-9) for name, amount in per_worker.items() if amount > 0]
    return min(counts) if counts else math.inf


def multi_node_reason(cfg: ExperimentConfig, nodes: Mapping[str, Mapping[str, float]], driver_node: str,
                      per_worker: Mapping[str, float]) -> Optional[str]:
    """Why the workers may run on other nodes than the driver's, or None when they all run on it.

    ``nodes``: node id -> total resources, for each alive node of the Ray cluster; ``driver_node``:
    the id of the node this driver runs on. An explicit ``distributed.num_nodes`` decides.
    Otherwise the run is taken as single-node only when the driver's node is the one node that can
    host a worker and it holds all ``distributed.num_workers`` of them: Ray places workers on any
    node that fits (a GPU run on a CPU head is always elsewhere), and on an autoscaling cluster
    whose worker nodes are not up yet, on nodes still to come.
    """
    dist = cfg.distributed
    if dist.num_nodes:
        return f"distributed.num_nodes={dist.num_nodes}" if dist.num_nodes > 1 else None
    capacity = {node: workers_per_node(resources, per_worker) for node, resources in nodes.items()}
    hosts = [node for node, count in capacity.items() if count >= 1]
    largest = max(capacity.values(), default=0)
    wanted = ", ".join(f"{amount:g} {name}" for name, amount in per_worker.items())
    if largest < dist.num_workers:
        return (f"distributed.num_workers={dist.num_workers} workers of {wanted} each fit on no single node of this "
                f"Ray cluster (the largest holds {largest})")
    if hosts != [driver_node]:
        elsewhere = len([node for node in hosts if node != driver_node])
        return f"Ray may place the workers ({wanted} each) on {elsewhere} node(s) other than the driver's"
    return None


def is_local_storage(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def is_local_mlflow_store(uri: str) -> bool:
    return urlparse(uri).scheme in LOCAL_MLFLOW_SCHEMES


def check_shared_storage(cfg: ExperimentConfig, reason: Optional[str], tracking_uri: Optional[str]) -> None:
    """Refuse a multi-node run (``reason`` from :func:`multi_node_reason`) whose checkpoints or MLflow
    store would live on one node's disk."""
    if reason is None:
        return
    hint = "; or set distributed.num_nodes=1 if every worker will run on the driver's node"
    if is_local_storage(cfg.storage.path) and not cfg.storage.shared_filesystem:
        raise ConfigError(
            f"storage.path={cfg.storage.path!r} is a local folder, but this run's workers may run on other nodes "
            f"({reason}): each node would keep its own checkpoint shards. Use storage.path=s3://bucket/runs or gs://bucket/runs, "
            "or a folder every node mounts at the same path (NFS, EFS) with storage.shared_filesystem=true" + hint
        )
    if tracking_uri and is_local_mlflow_store(tracking_uri):
        raise ConfigError(
            f"tracking.uri={tracking_uri!r} is a store on the driver's disk, but this run's workers may run on other "
            f"nodes ({reason}): rank 0 would log into an empty store of its own node. Run an MLflow server and set "
            "tracking.uri=http://<host>:5000 (or MLFLOW_TRACKING_URI), or tracking.enabled=false" + hint
        )
