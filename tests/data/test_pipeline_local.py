"""The audio stream without Ray: epochs, reproducible crops, prompts and the batch contract."""

from __future__ import annotations

import json

import numpy as np
import torch

from audio_helpers import write_audio
from sa_train.data.config import DataConfig
from sa_train.data.pipeline import epoch_order, iter_local_batches, stream_position


def long_files(tmp_path, count=4, seconds=8.0):
    rows = []
    for i in range(count):
        write_audio(tmp_path / f"f{i}.wav", seconds=seconds, frequency=200.0 + 50 * i)
        rows.append({"path": f"f{i}.wav", "caption": f"tone {i}", "bpm": 100 + i})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(manifest)


def by_path(batches):
    return {(epoch, path): (audio, start) for epoch, batch in batches for path, audio, start in
            zip(batch.paths, batch.audio, batch.seconds_start.tolist())}


def test_batches_follow_the_contract_and_the_prompt_template(tmp_path):
    cfg = DataConfig(sources=[long_files(tmp_path)], prompt_template="{caption} at {bpm} BPM")
    (batch,) = list(iter_local_batches(cfg, batch_size=4, seed=0))
    assert batch.audio.shape == (4, 2, cfg.window_samples) and batch.padding_mask.all()
    assert sorted(batch.prompts) == [f"tone {i} at {100 + i} BPM" for i in range(4)]
    assert batch.seconds_total.tolist() == [8, 8, 8, 8]
    assert ((batch.seconds_start >= 0) & (batch.seconds_start <= 5)).all()


def test_each_epoch_visits_every_file_once_with_new_crops(tmp_path):
    cfg = DataConfig(sources=[long_files(tmp_path)])
    batches = list(iter_local_batches(cfg, batch_size=4, seed=0, epochs=2))
    first, second = batches
    assert sorted(first.paths) == sorted(second.paths)
    for path in first.paths:
        a = first.audio[first.paths.index(path)]
        b = second.audio[second.paths.index(path)]
        assert not torch.equal(a, b)


def test_same_seed_reproduces_the_stream_and_another_seed_changes_it(tmp_path):
    cfg = DataConfig(sources=[long_files(tmp_path)])
    one = list(iter_local_batches(cfg, 2, seed=7, epochs=2))
    two = list(iter_local_batches(cfg, 2, seed=7, epochs=2))
    other = list(iter_local_batches(cfg, 2, seed=8, epochs=2))
    assert all(torch.equal(a.audio, b.audio) and a.paths == b.paths for a, b in zip(one, two))
    assert any(not torch.equal(a.audio, b.audio) for a, b in zip(one, other))


def test_epoch_order_is_a_permutation_that_changes_per_epoch():
    orders = [epoch_order(50, 1, e) for e in range(3)]
    assert all(sorted(o.tolist()) == list(range(50)) for o in orders)
    assert not np.array_equal(orders[0], orders[1])
    assert stream_position(57, 50, 1, True) == (1, int(orders[1][7]))
    assert epoch_order(5, 1, 0, shuffle=False).tolist() == [0, 1, 2, 3, 4]


def test_short_files_in_a_batch_carry_their_padding_masks(tmp_path):
    write_audio(tmp_path / "short.wav", frames=30000)
    write_audio(tmp_path / "long.wav", seconds=4)
    cfg = DataConfig(sources=[str(tmp_path)])
    (batch,) = list(iter_local_batches(cfg, 2, seed=0, shuffle=False))
    assert batch.paths[0].endswith("long.wav") and batch.padding_mask[0].all()
    assert batch.padding_mask[1].sum() == 30000 and batch.audio[1, :, 30000:].abs().sum() == 0
    assert batch.seconds_total.tolist() == [4, 1]
