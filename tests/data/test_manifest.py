"""Large manifests without Ray: the reader switch, the driver's column check, the local shuffle
buffer's order, Parquet on the driver path, and buffered remote audio."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from audio_helpers import write_audio
from manifest_helpers import write_rows
from sa_train.config.fields import ConfigError
from sa_train.data import manifest as manifest_module
from sa_train.data import sources
from sa_train.data.config import DataConfig
from sa_train.data.decode import read_window
from sa_train.data.manifest import ManifestError, ShuffleWindows, check_manifest_columns, use_ray_data
from sa_train.data.pipeline import example_rng, load_files, stream_position
from sa_train.data.sources import read_manifest


# ---------------------------------------------------------------------------------------------
# The local shuffle buffer


def block_of(windows, file):
    return windows.block_of(file)[0]


def test_shuffle_windows_read_every_file_once_per_epoch_and_mix_shards_within_a_bounded_window():
    windows = ShuffleWindows([100] * 20, window_files=400, seed=3)  # 20 shards, windows of 4
    assert not windows.one_window and windows.window_blocks == 4
    epochs = []
    for epoch in range(2):
        order = [windows.locate(epoch * 2000 + p) for p in range(2000)]
        assert {e for e, _ in order} == {epoch}
        files = np.array([f for _, f in order])
        assert sorted(files) == list(range(2000))  # a permutation: every file once
        blocks = np.array([block_of(windows, f) for f in files])
        for start in range(0, 2000, 400):  # each window holds 4 whole shards, no more
            in_window = blocks[start : start + 400]
            assert len(set(in_window)) == 4 and all(np.sum(in_window == b) == 100 for b in set(in_window))
            assert len(set(blocks[start : start + 20])) >= 3  # the first few reads already mix shards
        # neighbours in the stream come from different shards about 3/4 of the time (4 per window)
        assert np.mean(blocks[1:] != blocks[:-1]) > 0.6
        epochs.append(files)
    assert not np.array_equal(epochs[0], epochs[1])
    # the shards of a window are not the manifest's neighbours every time: block order is shuffled
    firsts = [sorted({block_of(windows, f) for f in e[:400]}) for e in epochs]
    assert any(first != [0, 1, 2, 3] for first in firsts)


def test_shuffle_windows_without_shuffle_read_the_manifest_in_order():
    windows = ShuffleWindows([5, 7, 3, 9], window_files=10, seed=0, shuffle=False)
    assert [windows.locate(r) for r in range(24)] == [(0, f) for f in range(24)]
    assert windows.locate(30) == (1, 6)


def test_a_manifest_within_the_buffer_is_shuffled_as_the_driver_path_shuffles_it():
    windows = ShuffleWindows([64, 64, 22], window_files=150, seed=9)
    assert windows.one_window
    assert [windows.locate(r) for r in range(450)] == [stream_position(r, 150, 9, True) for r in range(450)]


# ---------------------------------------------------------------------------------------------
# Which path reads the sources, and the driver's cheap check


def test_reader_switch_keeps_small_local_manifests_and_folders_on_the_driver(tmp_path, monkeypatch):
    small = write_rows(tmp_path / "m.jsonl", [{"path": "a.wav", "caption": "x"}])
    parquet = write_rows(tmp_path / "m.parquet", [{"path": "a.wav", "caption": "x"}])
    assert not use_ray_data([small], "auto")
    assert not use_ray_data([small, str(tmp_path)], "auto")  # a folder among the sources
    assert use_ray_data([parquet], "auto")
    assert use_ray_data(["s3://bucket/corpus/manifest.jsonl"], "auto")
    assert not use_ray_data([parquet], "driver")
    assert use_ray_data([small], "ray_data")
    monkeypatch.setattr(manifest_module, "DRIVER_MANIFEST_MAX_BYTES", 10)
    assert use_ray_data([small], "auto")  # a large local manifest
    with pytest.raises(ConfigError, match="manifest_reader=ray_data reads manifests .* data check"):
        use_ray_data([small, str(tmp_path)], "ray_data")


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet"])
def test_a_manifest_without_a_path_column_fails_naming_it_before_ray_starts(tmp_path, monkeypatch, suffix):
    manifest = write_rows(tmp_path / f"m.{suffix}", [{"file": "a.wav", "caption": "x"}, {"file": "b.wav", "caption": "y"}])

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a manifest the header already rules out")

    monkeypatch.setattr("sa_train.ray_session.ensure_ray", no_ray)
    cfg = DataConfig(sources=[manifest], manifest_reader="ray_data")
    with pytest.raises(ManifestError, match=rf"manifest .*m\.{suffix} has no 'path' column .*'file'"):
        load_files(cfg)


def test_a_template_field_no_column_holds_is_named_with_the_manifest(tmp_path):
    manifest = write_rows(tmp_path / "m.csv", [{"path": "a.wav", "caption": "x", "genre": "jazz"}])
    assert check_manifest_columns(manifest, "{caption}, {genre}") == ["path", "caption", "genre"]
    with pytest.raises(ManifestError, match=r"uses \['bpm'\], which manifest .*m\.csv has no column"):
        check_manifest_columns(manifest, "{caption} at {bpm} BPM")
    with pytest.raises(ManifestError, match="does not exist"):
        check_manifest_columns(str(tmp_path / "nowhere.parquet"), "{caption}")
    (tmp_path / "broken.jsonl").write_text('{"path": "a.wav"\n')
    with pytest.raises(ManifestError, match="broken.jsonl line 1 is not valid JSON"):
        check_manifest_columns(str(tmp_path / "broken.jsonl"), "{caption}")


def test_parquet_manifests_read_on_the_driver_like_jsonl(tmp_path):
    rows = [{"path": "a.wav", "caption": "one", "bpm": 120}, {"path": "sub/b.wav", "caption": None, "bpm": 90}]
    from_jsonl = read_manifest(write_rows(tmp_path / "m.jsonl", rows))
    from_parquet = read_manifest(write_rows(tmp_path / "m.parquet", rows))
    assert from_parquet == from_jsonl
    assert from_parquet[1].path == str(tmp_path / "sub" / "b.wav") and from_parquet[1].caption is None


# ---------------------------------------------------------------------------------------------
# Remote audio through a read buffer


def test_remote_audio_is_read_through_a_buffer_in_few_large_reads(tmp_path, monkeypatch):
    path = write_audio(tmp_path / "long.flac", seconds=20.0)
    reads = []
    real = sources._RemoteRaw.readinto

    def counted(self, buffer):
        reads.append(len(buffer))
        return real(self, buffer)

    monkeypatch.setattr(sources._RemoteRaw, "readinto", counted)
    with sources.open_audio(f"file://{path}") as f:
        assert f.size() == tmp_path.joinpath("long.flac").stat().st_size
        remote, _ = soundfile.read(f, dtype="float32")
    local, _ = soundfile.read(path, dtype="float32")
    np.testing.assert_array_equal(remote, local)
    size = tmp_path.joinpath("long.flac").stat().st_size
    # a handful of buffer-sized requests (plus a few header probes), not libsndfile's small reads
    assert 1 <= len(reads) <= size // sources.REMOTE_READ_BUFFER + 6
    assert max(reads) >= min(size, sources.REMOTE_READ_BUFFER) // 2

    cfg = DataConfig(window_samples=8192, crop="random")
    a = read_window(f"file://{path}", cfg, example_rng(1, 0, 0))
    b = read_window(path, cfg, example_rng(1, 0, 0))
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.seconds_start == b.seconds_start


def test_training_refuses_a_manifest_without_a_path_column_before_any_worker_starts(tmp_path, monkeypatch):
    from sa_train.config import load_config
    from sa_train.training.launcher import build_train_dataset

    manifest = write_rows(tmp_path / "m.parquet", [{"file": "a.wav", "caption": "x"}])

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started before the manifest's columns were checked")

    monkeypatch.setattr("sa_train.ray_session.ensure_ray", no_ray)
    cfg = load_config(None, ["training.stage=autoencoder", f"data.sources=[{manifest}]"])  # auto: Parquet
    with pytest.raises(ManifestError, match=r"m\.parquet has no 'path' column"):
        build_train_dataset(cfg, "tally.unused")


def test_a_remote_folders_sidecars_are_read_concurrently_into_the_same_records(tmp_path, monkeypatch):
    for i in range(6):
        write_audio(tmp_path / f"clip{i}.wav", seconds=0.1)
        if i % 2:
            (tmp_path / f"clip{i}.txt").write_text(f"caption {i}\n")
        else:
            (tmp_path / f"clip{i}.json").write_text(f'{{"caption": "json {i}", "bpm": {i}}}')
    monkeypatch.setattr(sources, "SIDECAR_READERS", 3)
    remote = sources.scan_folder(f"file://{tmp_path}")
    local = sources.scan_folder(str(tmp_path))
    assert [r.path for r in remote] == [f"file://{r.path}" for r in local]
    assert [(r.caption, r.fields) for r in remote] == [(r.caption, r.fields) for r in local]
    assert remote[0].caption == "json 0" and remote[0].fields == {"bpm": 0} and remote[1].caption == "caption 1"
