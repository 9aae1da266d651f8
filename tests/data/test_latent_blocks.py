"""The latent stream on the suite's local Ray instance: a shard leaves its read task in small blocks."""

from __future__ import annotations

from collections import Counter

import pytest

from latent_helpers import DOWN, encode, ramp_corpus
from sa_train.data.config import DataConfig
from sa_train.data.latents import build_latent_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_latent_shard_is_dealt_out_in_small_blocks_so_every_rank_gets_data_early(ray_session, tmp_path):
    cfg = DataConfig(sources=[ramp_corpus(tmp_path / "audio")], window_samples=16 * DOWN)
    out = str(tmp_path / "latents")
    encode(cfg, out, shard_size=5)  # one shard of all five files
    cfg.latents = out
    ds = build_latent_dataset(cfg, "ae-1", seed=0, epochs=2, block_examples=2)
    blocks = [b.num_rows() for b in ds.iter_internal_ref_bundles()]
    # 2 epochs x 1 shard x 5 files, in blocks of at most 2: a streaming split gives them to 3+ ranks
    # per pass instead of the whole shard to one rank
    assert sum(blocks) == 10 and max(blocks) <= 2 and len(blocks) >= 6
    paths = Counter(r["path"] for r in ds.take_all())
    assert len(paths) == 5 and set(paths.values()) == {2}  # every file once per epoch
