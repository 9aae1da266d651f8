"""A rerun of a config trains on the same examples, in the same order, on every rank.

Ray Train deals the training stream out to the ranks with ``streaming_split`` and replaces the
dataset's own execution options with its ``dataset_config``. Without order preserved there, blocks
reach the ranks in the order their decode tasks finish, which changes from run to run: measured on
the demo's 48 files, two runs' rank-0 streams parted after 48-64 examples (2 of 2 pairs), and two
150-step launches of the demo's VAE stage ended 0.022 apart in their weights (max abs), against
exactly 0 with order preserved (measured by hand on 2026-12-03; benchmarks/README.md).
"""

from __future__ import annotations

import threading
import uuid

import pytest

from sa_train.config import load_config
from sa_train.training.launcher import build_train_dataset, train_data_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORLD = 2


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from sa_train.data.synth import write_synth_dataset

    folder = tmp_path_factory.mktemp("stream_corpus")
    write_synth_dataset(str(folder), 48, seed=0, max_seconds=5)
    return folder / "manifest.jsonl"


def config(corpus, *extra):
    # 6 passes over 48 files in 8 decode blocks: several decode tasks in flight at once.
    return load_config(None, [f"data.sources=[{corpus}]", "data.window_samples=8192", "training.stage=autoencoder",
                              "training.steps=72", "training.global_batch_size=4", f"distributed.num_workers={WORLD}",
                              "training.seed=3", *extra])


def rank_streams(cfg) -> list[list[tuple[str, int]]]:
    """(path, seconds_start) of every example each rank is dealt, read by both ranks at once as the
    workers do, through the launcher's own dataset and Ray Train's split of it."""
    run = uuid.uuid4().hex[:8]
    dataset = build_train_dataset(cfg, f"test.tally.{run}")
    splits = train_data_config(cfg).configure({"train": dataset}, world_size=WORLD, worker_handles=None,
                                              worker_node_ids=None)
    seen: list[list[tuple[str, int]]] = [[] for _ in range(WORLD)]
    errors: list[BaseException] = []

    def consume(rank: int) -> None:
        try:
            for batch in splits[rank]["train"].iter_batches(batch_size=2):
                seen[rank].extend(zip(batch["path"], (int(s) for s in batch["seconds_start"])))
        except BaseException as error:  # re-raised below: a reader's failure must fail the test
            errors.append(error)

    threads = [threading.Thread(target=consume, args=(rank,), daemon=True) for rank in range(WORLD)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), "a rank's reader hung"
    if errors:
        raise errors[0]
    return seen


def test_two_runs_of_one_config_deal_each_rank_the_same_examples_in_the_same_order(ray_session, corpus):
    cfg = config(corpus)
    first, second = rank_streams(cfg), rank_streams(cfg)
    examples = 48 * (72 * 4 // 48 + 2)
    assert sum(map(len, first)) == examples
    for rank in range(WORLD):
        assert first[rank] == second[rank], f"rank {rank} was dealt other examples on the rerun"
    assert len(first[0]) == len(first[1]) and first[0] != first[1]  # an equal share each, not the same one


def test_order_can_be_traded_for_locality_and_the_stream_still_holds_every_example(ray_session, corpus):
    streams = rank_streams(config(corpus, "data.preserve_order=false"))
    assert sorted(streams[0] + streams[1]) == sorted(sum(rank_streams(config(corpus)), []))
