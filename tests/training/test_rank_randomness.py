"""Every rank draws its own random numbers, and a resumed run draws what an uninterrupted one would.

Two real ranks: two processes over gloo, each building the diffusion task with its real DeepSpeed
engine (ZeRO-2), exactly as a Ray Train worker does, minus Ray.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from sa_train.training.random_streams import RandomStreams, stream_seed

WORLD = 2
MICRO = 2
OVERRIDES = [
    "training.stage=diffusion", "model.autoencoder.pretrained=unused", "distributed.device=cpu",
    f"distributed.num_workers={WORLD}", "distributed.zero_stage=2", f"training.global_batch_size={WORLD * MICRO}",
    "training.seed=7", "model.diffusion.cfg_dropout=0.5", "model.diffusion.mask_padding_in_loss=true",
    "model.diffusion.padding_mask_dropout=0.5", "training.ema.enabled=false",
]


def test_stream_seeds_differ_by_rank_and_stream_and_repeat_for_the_same_ones():
    seeds = {(rank, name): stream_seed(7, rank, name) for rank in range(4) for name in ("noise", "cfg_dropout")}
    assert len(set(seeds.values())) == len(seeds)
    assert stream_seed(7, 1, "noise") == seeds[(1, "noise")]
    a, b = RandomStreams(7, 0), RandomStreams(7, 0)
    assert torch.equal(torch.rand(5, generator=a["noise"]), torch.rand(5, generator=b["noise"]))


def test_a_checkpoint_without_stream_state_is_refused_by_name():
    streams = RandomStreams(7, 0)
    with pytest.raises(ValueError, match="random stream 'noise' of rank 0"):
        streams.load_state_tensors({})


def latent_batch(step: int, rank: int):
    from sa_train.data.batch import AudioBatch

    g = torch.Generator().manual_seed(1000 * step + rank)
    frames = 16
    mask = torch.ones(MICRO, frames, dtype=torch.bool)
    mask[:, 10:] = False
    return AudioBatch(
        audio=torch.randn(MICRO, 16, frames, generator=g), padding_mask=mask, prompts=["a tone", "a drum"],
        seconds_start=torch.zeros(MICRO, dtype=torch.long), seconds_total=torch.full((MICRO,), 2, dtype=torch.long),
        is_latent=True,
    )


def build(rank: int):
    from sa_train.config import load_config
    from sa_train.training.tasks import DiffusionTask

    cfg = load_config(None, OVERRIDES)
    return DiffusionTask(cfg, torch.device("cpu"), rank, WORLD, on_gpu=False)


def record_draws(task) -> list:
    """Spy on the task's random draws: diffusion noise and the CFG / loss-mask decisions."""
    draws: list = []
    noise_fn = task.draw_noise

    def spy_noise(x0):
        noise = noise_fn(x0)
        draws.append(("noise", noise.clone()))
        return noise

    task.draw_noise = spy_noise
    for name in ("cfg_dropout", "loss_mask"):
        generator = task.streams[name]
        draws.append((name, generator.get_state().clone()))
    return draws


def record_local_losses(task) -> list:
    """Spy on the loss each micro-step backpropagates on this rank (its own share of the batch)."""
    losses: list = []
    backward = task.engine.backward

    def spy_backward(loss, *args, **kwargs):
        losses.append(float(loss.detach()))
        return backward(loss, *args, **kwargs)

    task.engine.backward = spy_backward
    return losses


def worker(rank: int, port: int, folder: str) -> None:
    import torch.distributed as dist

    from sa_train.training.checkpoint import load_rng, load_streams, save_rng

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(WORLD)})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        out = Path(folder)
        # Uninterrupted: three steps.
        task = build(rank)
        first_weight = next(task.engine.module.parameters()).detach().clone()
        draws = record_draws(task)
        local_losses = record_local_losses(task)
        logged_losses = []
        for step in range(3):
            logged_losses.append(task.micro_step(latent_batch(step, rank)).metrics["loss"])
            if step == 0:  # what a checkpoint after step 1 holds for this rank
                save_rng(out / "ckpt", rank, extra=task.extra_state(), streams=task.stream_state())
                after_first = torch.get_rng_state()
        noises = [d for name, d in draws if name == "noise"]
        # Resumed: a fresh task restores the rank's state after step 1 and draws steps 2 and 3.
        torch.set_rng_state(after_first)
        resumed = build(rank)
        resumed.load_extra_state(load_rng(out / "ckpt", rank))
        resumed.load_stream_state(load_streams(out / "ckpt", rank))
        resumed_draws = record_draws(resumed)
        for step in (1, 2):
            resumed.micro_step(latent_batch(step, rank))
        resumed_noises = [d for name, d in resumed_draws if name == "noise"]
        results = {
            "weight": first_weight, "noise": noises, "resumed_noise": resumed_noises,
            "cfg_state_after": task.streams["cfg_dropout"].get_state(),
            "cfg_state_resumed": resumed.streams["cfg_dropout"].get_state(),
            "mask_state_after": task.streams["loss_mask"].get_state(),
            "mask_state_resumed": resumed.streams["loss_mask"].get_state(),
            "local_losses": local_losses, "logged_losses": logged_losses,
        }
        # A NaN batch on rank 1 only: both ranks must skip the step (and neither engine steps).
        bad = latent_batch(3, rank)
        if rank == 1:
            bad.audio[:] = float("nan")
        before = next(resumed.engine.module.parameters()).detach().clone()
        skipped = resumed.micro_step(bad)
        results["nan_skipped"] = skipped.skipped and not skipped.boundary
        results["nan_weights_kept"] = torch.equal(before, next(resumed.engine.module.parameters()).detach())
        torch.save(results, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_draws(tmp_path_factory, spawn_ranks):
    folder = tmp_path_factory.mktemp("ranks")
    spawn_ranks(worker, WORLD, str(folder))
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_two_ranks_start_from_identical_weights(two_rank_draws):
    assert torch.equal(two_rank_draws[0]["weight"], two_rank_draws[1]["weight"])


def test_two_ranks_draw_different_diffusion_noise_and_dropout(two_rank_draws):
    r0, r1 = two_rank_draws
    for step in range(3):
        assert not torch.allclose(r0["noise"][step], r1["noise"][step])
    assert not torch.equal(r0["cfg_state_after"], r1["cfg_state_after"])
    assert not torch.equal(r0["mask_state_after"], r1["mask_state_after"])


def test_a_resumed_rank_draws_what_the_uninterrupted_run_drew(two_rank_draws):
    for rank in two_rank_draws:
        assert torch.equal(rank["resumed_noise"][0], rank["noise"][1])
        assert torch.equal(rank["resumed_noise"][1], rank["noise"][2])
        assert torch.equal(rank["cfg_state_resumed"], rank["cfg_state_after"])
        assert torch.equal(rank["mask_state_resumed"], rank["mask_state_after"])


def test_the_logged_loss_is_the_mean_over_both_ranks_not_rank_0s(two_rank_draws):
    r0, r1 = two_rank_draws
    for step in range(3):
        local = (r0["local_losses"][step], r1["local_losses"][step])
        assert local[0] != pytest.approx(local[1], rel=1e-3)  # the ranks' shares differ, so the mean is seen
        assert r0["logged_losses"][step] == pytest.approx(sum(local) / 2, rel=1e-9)
        assert r1["logged_losses"][step] == r0["logged_losses"][step]


def test_a_non_finite_loss_on_one_rank_skips_the_step_on_both(two_rank_draws):
    for rank in two_rank_draws:
        assert rank["nan_skipped"] is True
        assert rank["nan_weights_kept"] is True
