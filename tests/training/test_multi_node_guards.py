"""A run whose workers may leave the driver's node is refused, before any worker starts, when its
checkpoints or its MLflow store would live on one node's disk. Judged from the Ray cluster's nodes,
faked here."""

from __future__ import annotations

import pytest

from sa_train.config import ConfigError, load_config
from sa_train.distributed.nodes import check_shared_storage, multi_node_reason, workers_per_node
from sa_train.training import launcher

GPU_NODE = {"CPU": 96.0, "GPU": 8.0}  # one 8 x A100 node
PER_GPU_WORKER = {"CPU": 8.0, "GPU": 1.0}


def config(*overrides: str):
    return load_config(None, ["model.autoencoder.pretrained=x", "training.global_batch_size=64", *overrides])


def test_workers_per_node_is_set_by_the_scarcest_resource():
    assert workers_per_node(GPU_NODE, PER_GPU_WORKER) == 8
    assert workers_per_node({"CPU": 32.0, "GPU": 8.0}, PER_GPU_WORKER) == 4
    assert workers_per_node({"CPU": 4.0}, PER_GPU_WORKER) == 0  # a CPU-only head node


def test_more_workers_than_the_largest_node_holds_is_a_multi_node_run():
    gpu_cluster = {"head": {"CPU": 4.0}, **{f"gpu{i}": GPU_NODE for i in range(8)}}
    reason = multi_node_reason(config("distributed.num_workers=64"), gpu_cluster, "head", PER_GPU_WORKER)
    assert "distributed.num_workers=64" in reason and "the largest holds 8" in reason
    # An autoscaling cluster with only its head up: the workers start on nodes not yet there.
    assert "the largest holds 0" in multi_node_reason(config("distributed.num_workers=8"), {"head": {"CPU": 4.0}},
                                                      "head", PER_GPU_WORKER)


def test_workers_that_fit_on_one_node_are_single_node_only_on_the_drivers_own():
    one_gpu_node = config("distributed.num_workers=8")
    assert multi_node_reason(one_gpu_node, {"box": GPU_NODE}, "box", PER_GPU_WORKER) is None  # one machine
    # A CPU head and one GPU node: every worker runs on the GPU node, none on the driver's.
    reason = multi_node_reason(one_gpu_node, {"head": {"CPU": 4.0}, "gpu0": GPU_NODE}, "head", PER_GPU_WORKER)
    assert "1 node(s) other than the driver's" in reason
    # Two nodes that could each hold them: Ray may place them on either.
    assert multi_node_reason(one_gpu_node, {"a": GPU_NODE, "b": GPU_NODE}, "a", PER_GPU_WORKER) is not None


def test_an_explicit_num_nodes_overrides_the_clusters_shape():
    head_only = {"head": {"CPU": 4.0}}
    assert multi_node_reason(config("distributed.num_workers=8", "distributed.num_nodes=1"), head_only, "head",
                             PER_GPU_WORKER) is None
    assert multi_node_reason(config("distributed.num_workers=8", "distributed.num_nodes=2"), {"box": GPU_NODE}, "box",
                             PER_GPU_WORKER) == "distributed.num_nodes=2"


@pytest.mark.parametrize("path", ["runs", "/data/runs", "file:///data/runs"])
def test_a_multi_node_run_refuses_a_local_storage_path(path):
    with pytest.raises(ConfigError, match=r"storage.path=.*s3://.*storage.shared_filesystem=true"):
        check_shared_storage(config(f"storage.path={path}"), "distributed.num_nodes=8", "http://mlflow:5000")


@pytest.mark.parametrize("uri", ["sqlite:////data/mlflow.db", "file:///data/mlruns", "mlruns"])
def test_a_multi_node_run_refuses_a_node_local_mlflow_store(uri):
    with pytest.raises(ConfigError, match=r"tracking.uri=.*MLflow server.*http://"):
        check_shared_storage(config("storage.path=s3://bucket/runs"), "distributed.num_nodes=8", uri)


def test_shared_storage_and_a_tracking_server_pass_and_one_node_needs_neither():
    check_shared_storage(config("storage.path=s3://bucket/runs"), "distributed.num_nodes=8", "http://mlflow:5000")
    check_shared_storage(config("storage.path=/nfs/runs", "storage.shared_filesystem=true"),
                         "distributed.num_nodes=8", "https://mlflow.example.com")
    check_shared_storage(config("storage.path=s3://bucket/runs"), "distributed.num_nodes=8", None)  # no tracking
    check_shared_storage(config("storage.path=runs"), None, "sqlite:///mlflow.db")


def test_launch_refuses_a_multi_node_run_before_any_worker_or_mlflow_run(tmp_path, monkeypatch):
    import sa_train.ray_session

    monkeypatch.setattr(sa_train.ray_session, "ensure_ray", lambda **kwargs: None)
    monkeypatch.setattr(launcher, "cluster_nodes", lambda: ({"a": {"CPU": 2.0}, "b": {"CPU": 2.0}}, "a"))
    monkeypatch.setattr(launcher, "_train", lambda *args: pytest.fail("workers started"))
    cfg = config("distributed.num_workers=4", "distributed.device=cpu", f"storage.path={tmp_path / 'runs'}",
                 f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(ConfigError, match="storage.path=.* may run on other nodes .*the largest holds 2"):
        launcher.launch(cfg)
    assert not (tmp_path / "mlflow.db").exists()
