"""Manifests read through Ray Data on the suite's local Ray instance: the same files and prompts as
the driver's reader, nothing per row on the driver, bad rows named, and the same training stream."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from audio_helpers import write_audio
from manifest_helpers import write_rows
from sa_train.data import manifest as manifest_module
from sa_train.data.bad_files import create_bad_file_tally
from sa_train.data.config import DataConfig
from sa_train.data.manifest import ManifestCatalog, ManifestError, read_catalog
from sa_train.data.pipeline import build_audio_dataset, iter_local_batches, load_files, load_records

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEMPLATE = "{caption} at {bpm} BPM"


def catalog_rows(ray, catalog: ManifestCatalog) -> list[tuple[str, str]]:
    tables = ray.get(list(catalog.blocks))
    assert [t.num_rows for t in tables] == list(catalog.block_rows)
    return [(p, q) for t in tables for p, q in zip(t.column("path").to_pylist(), t.column("prompt").to_pylist())]


def corpus_rows(n: int) -> list[dict]:
    """``n`` rows over three files in two folders; every fifth row has no caption."""
    return [
        {"path": f"{'sub/' if i % 3 == 2 else ''}f{i % 3}.wav", "caption": None if i % 5 == 4 else f"clip {i}",
         "bpm": str(60 + i)}
        for i in range(n)
    ]


def test_manifests_through_ray_data_give_the_driver_readers_records_without_per_row_work_here(
    ray_session, tmp_path, monkeypatch
):
    rows = corpus_rows(150)
    manifests = [write_rows(tmp_path / f"m.{suffix}", rows) for suffix in ("jsonl", "csv", "parquet")]
    expected = {m: [(r.path, r.prompt) for r in load_records(DataConfig(sources=[m], prompt_template=TEMPLATE))]
                for m in manifests}

    def per_row_on_driver(*args, **kwargs):
        raise AssertionError("the driver read or built a record per manifest row")

    # The per-row functions fail in this process (the driver); Ray's worker processes keep theirs.
    monkeypatch.setattr(manifest_module, "manifest_record", per_row_on_driver)
    monkeypatch.setattr(manifest_module, "build_prompt", per_row_on_driver)
    monkeypatch.setattr("sa_train.data.sources.read_manifest", per_row_on_driver)
    monkeypatch.setattr("sa_train.data.pipeline.load_records", per_row_on_driver)
    monkeypatch.setattr(manifest_module, "READ_BLOCK_BYTES", 1024)  # several Ray Data read blocks per file

    for m in manifests:
        catalog = load_files(DataConfig(sources=[m], prompt_template=TEMPLATE, manifest_reader="ray_data",
                                        shuffle_buffer_files=400))
        assert isinstance(catalog, ManifestCatalog) and len(catalog) == 150
        assert list(catalog.block_rows) and max(catalog.block_rows) <= 64 and len(catalog.blocks) >= 3
        assert catalog.missing_captions == 30
        assert catalog_rows(ray_session, catalog) == expected[m], m

    # Two manifests: rows in source order, one file index space.
    both = read_catalog(manifests[:2], TEMPLATE, 400)
    assert catalog_rows(ray_session, both) == expected[manifests[0]] + expected[manifests[1]]


def test_a_bad_row_fails_naming_the_manifest_and_row(ray_session, tmp_path):
    rows = corpus_rows(100)
    del rows[69]["path"]
    no_path = write_rows(tmp_path / "no_path.jsonl", rows)
    with pytest.raises(ManifestError, match=r"no_path\.jsonl row 70 has no 'path'"):
        read_catalog([no_path], TEMPLATE, 400)
    rows = corpus_rows(100)
    del rows[4]["bpm"]
    no_field = write_rows(tmp_path / "no_field.jsonl", rows)
    with pytest.raises(ManifestError, match=r"no_field\.jsonl row 5: .*uses field 'bpm'.*f1\.wav lacks"):
        read_catalog([no_field], TEMPLATE, 400)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("path,caption,bpm\na.wav,one,60\nb.wav,two,61,extra\n")
    with pytest.raises(ManifestError, match=r"manifest .*ragged\.csv could not be read \(\w*Error: .*\); every row needs"):
        read_catalog([str(ragged)], TEMPLATE, 400)


def digest(audio) -> str:
    return hashlib.sha1(np.ascontiguousarray(np.asarray(audio, dtype=np.float32)).tobytes()).hexdigest()


def test_a_small_manifest_read_through_ray_data_trains_on_the_driver_paths_stream(ray_session, tmp_path):
    rows = []
    for i in range(4):
        write_audio(tmp_path / f"tone{i}.wav", seconds=1.0 + i, frequency=220.0 * (i + 1))
        rows.append({"path": f"tone{i}.wav", "caption": f"tone number {i}", "bpm": 100 + i})
    (tmp_path / "broken.wav").write_text("not audio at all")
    rows.append({"path": "broken.wav", "caption": "broken", "bpm": 1})
    manifest = write_rows(tmp_path / "m.parquet", rows)
    cfg = DataConfig(sources=[manifest], window_samples=4096, max_bad_fraction=0.5, prompt_template=TEMPLATE,
                     manifest_reader="ray_data")
    tally = create_bad_file_tally()
    ds = build_audio_dataset(cfg, seed=5, epochs=2, tally=tally)
    streamed = [(p, q, digest(a)) for b in ds.iter_batches(batch_size=3, batch_format="numpy")
                for p, q, a in zip(b["path"], b["prompt"], b["audio"])]
    driver = DataConfig(**{**cfg.__dict__, "manifest_reader": "driver"})
    local = [(p, q, digest(a)) for b in iter_local_batches(driver, 4, seed=5, epochs=2)
             for p, q, a in zip(b.paths, b.prompts, b.audio)]
    assert len(local) == 8 and sorted(streamed) == sorted(local)  # the same files, prompts and crops
    counter = ray_session.get(tally.snapshot.remote())
    assert counter.seen == 10 and dict(counter.counts) == {"unreadable": 2}


def test_a_resumed_stream_over_a_large_manifest_continues_in_the_shuffle_windows_order(ray_session, tmp_path):
    from collections import Counter

    from sa_train.data.manifest import ShuffleWindows
    from sa_train.training.run_board import create_board

    for i in range(3):
        write_audio(tmp_path / f"f{i}.wav", seconds=0.6)
    (tmp_path / "sub").mkdir()
    write_audio(tmp_path / "sub" / "f2.wav", seconds=0.6)
    manifest = write_rows(tmp_path / "m.jsonl", corpus_rows(150))
    cfg = DataConfig(sources=[manifest], window_samples=1024, prompt_template=TEMPLATE, manifest_reader="ray_data",
                     shuffle_buffer_files=64)  # blocks of 64 files, windows of two: 150 files in two windows
    catalog = load_files(cfg)
    windows = ShuffleWindows(catalog.block_rows, cfg.shuffle_buffer_files, seed=5)
    assert not windows.one_window
    prompts = [q for _, q in catalog_rows(ray_session, catalog)]
    board = create_board("test.manifest.resume.board")
    ray_session.get(board.set_data_start.remote(6))  # 6 examples seen before the restart
    ds = build_audio_dataset(cfg, seed=5, epochs=2, records=catalog, start_board="test.manifest.resume.board")
    resumed = [q for b in ds.iter_batches(batch_size=16, batch_format="numpy") for q in b["prompt"]]
    ray_session.kill(board)
    expected = [prompts[windows.locate(row)[1]] for row in range(6, 300 + 6)]
    assert Counter(resumed) == Counter(expected)
    assert Counter(resumed) != Counter(prompts[windows.locate(row)[1]] for row in range(300))  # not a replay


def test_encode_reads_a_large_manifest_through_its_catalog_into_the_same_shards(ray_session, tmp_path):
    from audio_helpers import PoolingEncoderFactory
    from sa_train.data.encode import run_encode
    from sa_train.data.latents import ShardStore, read_shard

    rows = []
    for i in range(5):
        write_audio(tmp_path / f"tone{i}.wav", seconds=0.5 + 0.25 * i, frequency=220.0 * (i + 1))
        rows.append({"path": f"tone{i}.wav", "caption": f"tone number {i}", "bpm": 90 + i})
    manifest = write_rows(tmp_path / "m.parquet", rows)
    shards = {}
    for reader in ("ray_data", "driver"):
        cfg = DataConfig(sources=[manifest], window_samples=8192, latent_shard_size=2, prompt_template=TEMPLATE,
                         manifest_reader=reader)
        out = str(tmp_path / f"latents-{reader}")
        summary = run_encode(cfg, PoolingEncoderFactory(), "ae-test", out, downsampling=1024)
        assert summary.examples == 5 and sorted(summary.shards_written) == [0, 1, 2]
        store = ShardStore(out)
        shards[reader] = [read_shard(store, name) for name in store.list_shards()]
    for a, b in zip(shards["ray_data"], shards["driver"]):
        assert list(a["prompt"]) == list(b["prompt"]) and list(a["path"]) == list(b["path"])
        np.testing.assert_array_equal(a["latents"], b["latents"])
