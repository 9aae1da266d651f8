"""The Ray Data pipelines on a local Ray instance (2 CPUs): audio, data check, encode, latents."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch

from audio_helpers import PoolingEncoderFactory, ThreadCountingEncoderFactory, names, write_audio
from sa_train.data.bad_files import create_bad_file_tally
from sa_train.data.collate import AudioBatchCollate
from sa_train.data.check import check_records
from sa_train.data.config import DataConfig
from sa_train.data.encode import run_encode
from sa_train.data.latents import build_latent_dataset
from sa_train.data.pipeline import build_audio_dataset, iter_local_batches
from sa_train.data.sources import collect_records

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WINDOW = 8192


def digest(audio) -> str:
    return hashlib.sha1(np.ascontiguousarray(np.asarray(audio, dtype=np.float32)).tobytes()).hexdigest()


@pytest.fixture
def corpus(tmp_path):
    for i in range(4):
        write_audio(tmp_path / f"tone{i}.wav", seconds=2.0 + i, frequency=220.0 * (i + 1))
        (tmp_path / f"tone{i}.txt").write_text(f"tone number {i}")
    (tmp_path / "broken.wav").write_text("not audio at all")
    return str(tmp_path)


def test_audio_dataset_yields_typed_batches_with_new_crops_each_epoch(ray_session, corpus):
    cfg = DataConfig(sources=[corpus], window_samples=WINDOW, max_bad_fraction=0.5)
    tally = create_bad_file_tally()
    ds = build_audio_dataset(cfg, seed=5, epochs=2, tally=tally)
    batches = list(ds.iter_torch_batches(batch_size=3, collate_fn=AudioBatchCollate()))
    assert sum(len(b) for b in batches) == 8  # 4 good files x 2 epochs
    crops: dict[str, set] = {}
    for batch in batches:
        assert batch.audio.shape[1:] == (2, WINDOW) and batch.audio.dtype == torch.float32
        assert batch.padding_mask.shape == (len(batch), WINDOW) and batch.padding_mask.all()
        for path, prompt, audio in zip(batch.paths, batch.prompts, batch.audio):
            assert prompt == f"tone number {path[-5]}"
            crops.setdefault(path, set()).add(digest(audio))
    assert len(crops) == 4 and all(len(c) == 2 for c in crops.values())  # a different crop per epoch

    counter = ray_session.get(tally.snapshot.remote())
    assert counter.seen == 10 and dict(counter.counts) == {"unreadable": 2}
    assert counter.metrics()["data/bad_fraction"] == pytest.approx(0.2)

    # The stream is reproducible: the local iterator draws the very same crops.
    local = {digest(a) for b in iter_local_batches(cfg, 4, seed=5, epochs=2) for a in b.audio}
    assert local == set().union(*crops.values())


def test_audio_dataset_over_a_broken_corpus_fails_with_the_reasons(ray_session, corpus):
    cfg = DataConfig(sources=[corpus], window_samples=WINDOW, max_bad_fraction=0.05)
    ds = build_audio_dataset(cfg, seed=0)
    with pytest.raises(Exception, match="max_bad_fraction") as err:
        list(ds.iter_batches(batch_size=4))
    assert "unreadable" in str(err.value) and "broken.wav" in str(err.value)


def test_check_on_ray_matches_the_local_scan(ray_session, bad_corpus):
    folder, expected = bad_corpus
    records = collect_records([folder])
    report = check_records(records, use_ray=True, files_per_task=2, progress=False)
    assert {b.path.rsplit("/", 1)[1]: b.reason for b in report.bad} == expected
    assert [f.path for f in report.files] == [f.path for f in check_records(records, use_ray=False, progress=False).files]


def test_encode_job_writes_shards_that_train_as_latent_crops(ray_session, corpus, tmp_path):
    cfg = DataConfig(
        sources=[corpus], window_samples=16 * 1024, encode_window_samples=64 * 1024,
        latent_shard_size=3, max_bad_fraction=0.5,
    )
    out = str(tmp_path / "latents")
    summary = run_encode(cfg, PoolingEncoderFactory(), "ae-test", out, downsampling=1024)
    assert sorted(summary.shards_written) == [0, 1] and summary.examples == 4
    assert summary.bad_files.counts == {"unreadable": 1}
    assert run_encode(cfg, PoolingEncoderFactory(), "ae-test", out, downsampling=1024).shards_skipped == [0, 1]

    cfg.latents = out
    rows = build_latent_dataset(cfg, "ae-test", seed=0, epochs=2).take_all()
    assert len(rows) == 8
    assert all(r["latents"].shape == (4, 16) and r["padding_mask"].shape == (16,) for r in rows)
    assert names(r["path"] for r in rows) == {f"tone{i}.wav" for i in range(4)}


def test_fewer_shards_than_cores_encode_with_the_idle_cores_as_threads(ray_session, corpus, tmp_path):
    # The suite's Ray instance has 4 logical CPUs; the machine has at least 2 cores on CI. One
    # shard is one actor's work: it should run on every core of this machine (at most the 4 CPUs
    # Ray has), not on one thread beside idle ones, and two shards split the cores between them.
    cores = min(4, len(os.sched_getaffinity(0)))
    for shard_size, actors in ((10, 1), (3, 2)):  # 5 files (one unreadable): 1 or 2 shards
        cfg = DataConfig(sources=[corpus], window_samples=16 * 1024, latent_shard_size=shard_size,
                         max_bad_fraction=0.5)
        seen = tmp_path / f"threads-{shard_size}"
        seen.mkdir()
        summary = run_encode(cfg, ThreadCountingEncoderFactory(str(seen)), "ae-test",
                             str(tmp_path / f"latents-{shard_size}"), downsampling=1024)
        assert summary.examples == 4
        threads = {int(p.read_text()) for p in seen.iterdir()}
        assert threads == {max(1, cores // actors)}, (shard_size, threads)


def test_a_resumed_audio_stream_continues_after_the_examples_already_seen(ray_session, corpus, tmp_path):
    """Rank 0 of a resumed run sets the run board's data start to the examples already seen; the
    stream then begins there instead of replaying its first batches."""
    import shutil

    from sa_train.training.run_board import create_board

    clean = tmp_path / "clean"
    clean.mkdir()
    for path in sorted(p for p in __import__("pathlib").Path(corpus).iterdir() if p.is_file() and p.name != "broken.wav"):
        shutil.copy(path, clean / path.name)
    cfg = DataConfig(sources=[str(clean)], window_samples=WINDOW)

    def stream(board_name=None):
        ds = build_audio_dataset(cfg, seed=5, epochs=3, start_board=board_name)
        return [(path, digest(audio)) for b in ds.iter_torch_batches(batch_size=2, collate_fn=AudioBatchCollate())
                for path, audio in zip(b.paths, b.audio)]

    fresh = stream()
    board = create_board("test.resume.board")
    ray_session.get(board.set_data_start.remote(6))  # 6 examples seen before the restart
    resumed = stream("test.resume.board")
    ray_session.kill(board)
    assert sorted(resumed[:4]) == sorted(fresh[6:10])  # the continuation, not the first batches again
    assert not set(resumed[:4]) & set(fresh[:4])
