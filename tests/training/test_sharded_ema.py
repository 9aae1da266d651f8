"""The EMA under ZeRO-0/2/3: each rank averages its own fp32 master partition, the full EMA on rank 0
equals the closed form of the recurrence over the weights seen, and it survives save and resume.

Two real ranks: two processes over gloo, each building the diffusion task with its real DeepSpeed
engine exactly as a Ray Train worker does, minus Ray; the checkpoint is written and read by the
worker's own functions into one folder (what Ray's merge of the ranks' folders gives).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

WORLD = 2
MICRO = 2
DECAY = 0.7
START = 2  # step 1 copies the weights; the average starts at step 2
STEPS, SAVE_AT = 4, 2
STAGES = (0, 2, 3)
COLLECTIVES = ("all_gather", "all_gather_into_tensor", "_all_gather_base", "broadcast", "all_reduce",
               "reduce_scatter_tensor", "gather", "scatter", "send", "recv", "isend", "irecv")


def overrides(stage: int) -> list[str]:
    return [
        "training.stage=diffusion", "model.autoencoder.pretrained=unused", "distributed.device=cpu",
        f"distributed.num_workers={WORLD}", f"distributed.zero_stage={stage}",
        f"training.global_batch_size={WORLD * MICRO}", "training.seed=3", "training.ema.enabled=true",
        f"training.ema.decay={DECAY}", f"training.ema.start_step={START}", "training.optimizer.lr=0.01",
    ]


def latent_batch(step: int, rank: int):
    from sa_train.data.batch import AudioBatch

    g = torch.Generator().manual_seed(1000 * step + rank)
    frames = 16
    return AudioBatch(
        audio=torch.randn(MICRO, 16, frames, generator=g), padding_mask=torch.ones(MICRO, frames, dtype=torch.bool),
        prompts=["a tone", "a drum"], seconds_start=torch.zeros(MICRO, dtype=torch.long),
        seconds_total=torch.full((MICRO,), 2, dtype=torch.long), is_latent=True,
    )


@contextlib.contextmanager
def count_collectives():
    """Counts calls of torch.distributed's collectives (DeepSpeed's comm layer goes through them)."""
    import torch.distributed as dist

    calls = {"n": 0}
    originals = {name: getattr(dist, name) for name in COLLECTIVES if hasattr(dist, name)}

    def counting(fn):
        def wrapper(*args, **kwargs):
            calls["n"] += 1
            return fn(*args, **kwargs)
        return wrapper

    for name, fn in originals.items():
        setattr(dist, name, counting(fn))
    try:
        yield calls
    finally:
        for name, fn in originals.items():
            setattr(dist, name, fn)


class FolderCheckpoint:
    """What ``ray.train.get_checkpoint()`` gives, for a local folder."""

    def __init__(self, path: Path):
        self.path = path

    @contextlib.contextmanager
    def as_directory(self):
        yield str(self.path)


def run_stage(stage: int, rank: int, out: Path) -> dict:
    import torch.distributed as dist

    from sa_train.config import load_config
    from sa_train.training.checkpoint import TrainState
    from sa_train.training.tasks import DiffusionTask
    from sa_train.training.worker import restore_checkpoint, write_checkpoint

    cfg = load_config(None, overrides(stage))
    task = DiffusionTask(cfg, torch.device("cpu"), rank, WORLD, on_gpu=False)
    result: dict = {"stage": task.engine.zero_optimization_stage(), "seen": [task.exported_weights()],
                    "shadow_dtypes": sorted({str(t.dtype) for t in task.ema.shadow}),
                    "ema_numel": sum(t.numel() for t in task.ema.shadow),
                    "master_numel": task.ema.partitions.numel_on_this_rank()}
    folder = out / f"zero{stage}"
    update_calls = 0
    for step in range(1, STEPS + 1):
        assert task.micro_step(latent_batch(step, rank)).boundary
        with count_collectives() as calls:
            task.update_ema(step)
        update_calls += calls["n"]
        result["seen"].append(task.exported_weights())  # None on rank 1
        if step == SAVE_AT:
            state = TrainState(step=step, world_size=WORLD, zero_stage=result["stage"], engines=["model"])
            write_checkpoint(task, state, cfg_yaml(cfg), rank, folder)
            dist.barrier()
    result["update_collectives"] = update_calls
    with count_collectives() as calls:
        result["ema"] = task.ema_weights()
    result["gather_collectives"] = calls["n"]
    with count_collectives() as calls:
        task.exported_weights()
    result["export_collectives"] = calls["n"]
    result["model"] = {n: p.detach().clone() for n, p in task.engine.module.named_parameters()} if stage != 3 else None

    resumed = DiffusionTask(cfg, torch.device("cpu"), rank, WORLD, on_gpu=False)
    state = restore_checkpoint(resumed, FolderCheckpoint(folder), rank, WORLD)
    result["ema_at_save_resumed"] = resumed.ema_weights()
    for step in range(state.step + 1, STEPS + 1):
        resumed.micro_step(latent_batch(step, rank))
        resumed.update_ema(step)
    result["ema_resumed"] = resumed.ema_weights()
    # The same gather in many small chunks (a large model's partitions are gathered piece by piece).
    import sa_train.training.master_weights as master_weights

    budget, smallest = master_weights.GATHER_BUDGET_ELEMENTS, master_weights.GATHER_MIN_CHUNK
    master_weights.GATHER_BUDGET_ELEMENTS, master_weights.GATHER_MIN_CHUNK = 2 * 1000, 1
    try:
        with count_collectives() as calls:
            result["ema_chunked"] = resumed.ema_weights()
        result["chunked_collectives"] = calls["n"]
    finally:
        master_weights.GATHER_BUDGET_ELEMENTS, master_weights.GATHER_MIN_CHUNK = budget, smallest
    dist.barrier()
    return result


def cfg_yaml(cfg) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(cfg)


def worker(rank: int, port: int, folder: str) -> None:
    import torch.distributed as dist

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(WORLD)})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        out = Path(folder)
        results = {stage: run_stage(stage, rank, out) for stage in STAGES}
        torch.save(results, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, spawn_ranks):
    folder = tmp_path_factory.mktemp("ema")
    spawn_ranks(worker, WORLD, str(folder))
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)], folder


def closed_form(seen: list[dict[str, torch.Tensor]], first_step: int = 1) -> dict[str, torch.Tensor]:
    """e_K = (prod_k d_k) w_0 + sum_k (1 - d_k) (prod_{j>k} d_j) w_k, d_k = 0 before START, in float64."""
    decays = [DECAY if step >= START else 0.0 for step in range(first_step, first_step + len(seen) - 1)]
    out = {}
    for name in seen[0]:
        total = seen[0][name].double() * torch.tensor(decays, dtype=torch.float64).prod()
        for k, weights in enumerate(seen[1:]):
            later = torch.tensor(decays[k + 1:], dtype=torch.float64).prod()
            total = total + (1 - decays[k]) * later * weights[name].double()
        out[name] = total
    return out


@pytest.mark.parametrize("stage", STAGES)
def test_the_ema_equals_the_closed_form_over_the_weights_seen(ranks, stage):
    r0 = ranks[0][0][stage]
    assert r0["stage"] == stage
    expected = closed_form(r0["seen"])
    assert set(r0["ema"]) == set(expected)
    moved = False
    for name, tensor in r0["ema"].items():
        assert tensor.dtype == torch.float32 and tensor.shape == r0["seen"][0][name].shape
        torch.testing.assert_close(tensor.double(), expected[name], rtol=1e-6, atol=1e-7)
        moved = moved or not torch.equal(tensor, r0["seen"][-1][name])
    assert moved  # the average lags the last weights: it is not a copy


@pytest.mark.parametrize("stage", STAGES)
def test_each_rank_keeps_the_ema_of_its_own_fp32_master_partition(ranks, stage):
    r0, r1 = ranks[0][0][stage], ranks[0][1][stage]
    total = sum(t.numel() for t in r0["ema"].values())
    for rank in (r0, r1):
        assert rank["shadow_dtypes"] in ([], ["torch.float32"])
        assert rank["ema_numel"] == rank["master_numel"]
    if stage == 0:  # replicated weights: each rank averages its own share of whole tensors
        assert r0["ema_numel"] + r1["ema_numel"] == total
        assert 0.2 * total < r0["ema_numel"] < 0.8 * total
    else:  # about half each (alignment padding aside), never the whole model on one rank
        for rank in (r0, r1):
            assert total / 2 <= rank["ema_numel"] <= total / 2 + 4 * len(r0["ema"]) + 4


@pytest.mark.parametrize("stage", STAGES)
def test_an_ema_update_needs_no_communication(ranks, stage):
    for rank in ranks[0]:
        assert rank[stage]["update_collectives"] == 0
        if stage > 0:  # the spy sees the gather of the full EMA: it would see one in an update
            assert rank[stage]["gather_collectives"] > 0


@pytest.mark.parametrize("stage", STAGES)
def test_only_rank0_ever_holds_the_full_weights_or_ema(ranks, stage):
    r1 = ranks[0][1][stage]
    assert all(seen is None for seen in r1["seen"])
    assert r1["ema"] is None and r1["ema_resumed"] is None


@pytest.mark.parametrize("stage", STAGES)
def test_the_ema_survives_save_and_resume(ranks, stage):
    from safetensors.torch import load_file

    r0 = ranks[0][0][stage]
    folder = ranks[1] / f"zero{stage}"
    saved = load_file(str(folder / "ema.safetensors"))  # full named tensors, as before
    at_save = closed_form(r0["seen"][:SAVE_AT + 1])
    assert set(saved) == set(at_save)
    for name in saved:
        torch.testing.assert_close(saved[name].double(), at_save[name], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(r0["ema_at_save_resumed"][name], saved[name], rtol=0, atol=0)
        torch.testing.assert_close(r0["ema_resumed"][name], r0["ema"][name], rtol=1e-6, atol=1e-7)
    model = load_file(str(folder / "model.safetensors"))
    for name, tensor in r0["seen"][SAVE_AT].items():
        torch.testing.assert_close(model[name], tensor, rtol=0, atol=0)


@pytest.mark.parametrize("stage", STAGES)
def test_the_full_weights_are_gathered_once_not_per_parameter(ranks, stage):
    parameters = len(ranks[0][0][stage]["ema"])
    for rank in ranks[0]:
        # One gather per flat partition group (one group here), whatever the number of tensors.
        assert 1 <= rank[stage]["export_collectives"] <= 2 < parameters
        assert 1 <= rank[stage]["gather_collectives"] <= 2


@pytest.mark.parametrize("stage", STAGES)
def test_a_gather_in_many_chunks_gives_the_same_tensors(ranks, stage):
    r0 = ranks[0][0][stage]
    assert r0["chunked_collectives"] > 10
    assert r0["ema_chunked"].keys() == r0["ema_resumed"].keys()
    for name, tensor in r0["ema_resumed"].items():
        assert torch.equal(r0["ema_chunked"][name], tensor)


def test_gathered_weights_are_the_modules_weights(ranks):
    for stage in (0, 2):  # the module holds full fp32 weights on every rank here
        r0 = ranks[0][0][stage]
        for name, tensor in r0["model"].items():
            torch.testing.assert_close(r0["seen"][-1][name], tensor, rtol=0, atol=0)


@pytest.mark.parametrize("stage", STAGES)
def test_a_real_checkpoint_has_the_size_the_plan_states(ranks, stage):
    from sa_train.planning.estimate import checkpoint_size

    folder = ranks[1] / f"zero{stage}"
    written = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    parameters = sum(t.numel() for t in ranks[0][0][stage]["ema"].values())
    planned = checkpoint_size(parameters, parameters, "fp32", stage, ema=True).total_bytes
    assert planned <= written <= planned * 1.05 + 200_000  # + pickle framing, RNG states, state.json


class WithNorm(torch.nn.Module):
    """Weights plus persistent buffers: float running statistics (averaged) and an integer counter (copied)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.norm = torch.nn.BatchNorm1d(3)

    def forward(self, x):
        return self.norm(self.linear(x))


def one_worker(rank: int, port: int, folder: str) -> None:
    """One rank (world size 1), ZeRO-0 and ZeRO-3 in one process group: DeepSpeed caches its groups
    per process, so a second group in the same process would not do."""
    import torch.distributed as dist

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        for stage in (0, 3):
            check_one_worker(stage, Path(folder))
    finally:
        dist.destroy_process_group()


def check_one_worker(stage: int, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from sa_train.config import load_config
    from sa_train.training.engines import make_engine
    from sa_train.training.sharded_ema import ShardedEMA

    cfg = load_config(None, ["model.autoencoder.pretrained=x", f"distributed.zero_stage={stage}",
                             "distributed.num_workers=1", "training.global_batch_size=8", "training.optimizer.lr=0.1"])

    def build():
        torch.manual_seed(0)
        engine = make_engine(WithNorm(), cfg, cfg.training.optimizer, world_size=1, on_gpu=False)
        return engine, ShardedEMA(engine, DECAY, start_step=START)

    engine, ema = build()
    assert engine.zero_optimization_stage() == stage
    seen = [ema.full_weights()]
    for step in range(1, STEPS + 1):
        loss = engine(torch.randn(8, 4, generator=torch.Generator().manual_seed(step))).square().mean()
        engine.backward(loss)
        engine.step()
        ema.update(step)
        current = ema.partitions.gather(ema.partitions.local())
        current.update({n: b.detach().clone() for n, b in engine.module.named_buffers()})
        seen.append(current)
    full = ema.full_weights()
    expected = closed_form([{k: v for k, v in s.items() if v.is_floating_point()} for s in seen])
    assert set(full) == {"linear.weight", "linear.bias", "norm.weight", "norm.bias", "norm.running_mean",
                         "norm.running_var", "norm.num_batches_tracked"}
    for name, tensor in expected.items():
        torch.testing.assert_close(full[name].double(), tensor, rtol=1e-6, atol=1e-7)
    assert full["norm.num_batches_tracked"].item() == STEPS  # integers are copied, not averaged
    save_file(full, str(tmp_path / "ema.safetensors"))
    _, reloaded = build()
    reloaded.load_file(tmp_path / "ema.safetensors")
    for name, tensor in reloaded.full_weights().items():
        assert torch.equal(tensor, full[name]), name
    del full["norm.running_var"]
    save_file(full, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match=r"missing \['norm.running_var'\]"):
        reloaded.load_file(tmp_path / "partial.safetensors")


def test_one_worker_ema_tracks_weights_and_buffers_and_reloads_from_its_file(tmp_path, spawn_ranks):
    spawn_ranks(one_worker, 1, str(tmp_path))
