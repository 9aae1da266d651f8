"""Latent shards: whole files stored, resumable encoding, per-epoch crops like the audio path's,
refusal of other autoencoders and of old format versions."""

from __future__ import annotations

import io
import json
import math
import os

import numpy as np
import pytest
import torch

from latent_helpers import DOWN, RATE, PoolingEncoder, encode, ramp_corpus, ramp_frame
from sa_train.data.config import DataConfig
from sa_train.data.encode import latent_mask, read_whole_file
from sa_train.data.latents import (
    LatentFormatError,
    ShardStore,
    autoencoder_identity,
    iter_local_latent_batches,
    read_shard,
    validate_shards,
)
from sa_train.data.pipeline import iter_local_batches


@pytest.fixture
def encoded(tmp_path):
    cfg = DataConfig(sources=[ramp_corpus(tmp_path / "audio")], window_samples=16 * DOWN,
                     encode_window_samples=64 * DOWN)
    out = str(tmp_path / "latents")
    summary = encode(cfg, out)
    cfg.latents = out
    return cfg, out, summary


def crops(cfg, epochs, seed=0, shuffle=True, identity="ae-1"):
    """(path, first latent frame, seconds_start, real frames) of every crop, epoch after epoch."""
    out = []
    for batch in iter_local_latent_batches(cfg, identity, batch_size=1, seed=seed, epochs=epochs, shuffle=shuffle):
        seconds = int(batch.seconds_total[0])  # every ramp file lasts whole seconds
        first = ramp_frame(batch.audio[0, 0, 0].item(), seconds * RATE)
        out.append((batch.paths[0], first, int(batch.seconds_start[0]), int(batch.padding_mask[0].sum())))
    return out


def test_shards_hold_every_file_whole_in_half_precision(encoded):
    cfg, out, summary = encoded
    assert summary.shards_written == [0, 1, 2] and summary.examples == 5
    shard = read_shard(ShardStore(out), "shard-000000.npz")
    # r0 is 1 s = 44100 samples, padded with silence to the 64-frame encode window; r1 is 2 s =
    # 88200 samples = ceil(88200 / 1024) = 87 frames, stored whole.
    assert shard["latents"].dtype == np.float16 and shard["latents"].shape == (4, 64 + 87)
    assert shard["frame_offsets"].tolist() == [0, 64, 151] and shard["samples"].tolist() == [RATE, 2 * RATE]
    assert list(shard["prompt"]) == ["ramp 0", "ramp 1"] and list(shard["seconds_total"]) == [1, 2]
    assert shard["file_index"].tolist() == [0, 1]
    meta = shard["metadata"]
    assert meta["format_version"] == 2 and meta["autoencoder_identity"] == "ae-1" and meta["downsampling"] == DOWN
    assert meta["frames"] == 151 and meta["min_frames"] == 64
    r1 = shard["latents"][:, 64:]
    np.testing.assert_allclose(r1[0, 10], (10 * DOWN + 511.5) / (2 * RATE), rtol=2e-3)
    last = np.arange(86 * DOWN, 2 * RATE).sum() / (2 * RATE) / DOWN  # the file's last 136 samples, then zeros
    np.testing.assert_allclose(r1[0, 86], last, rtol=2e-3)
    assert np.all(shard["latents"][:, 44:64] == 0)  # r0's padding encodes silence
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temporary files left


def test_whole_file_read_resamples_and_fixes_channels(make_audio):
    path = make_audio("mono.flac", seconds=1.5, sample_rate=22050, channels=1)
    cfg = DataConfig(sample_rate=RATE, channels=2)
    whole = read_whole_file(path, cfg, min_samples=4 * DOWN)
    assert whole.audio.shape == (2, 66150) and whole.padding_mask.all() and whole.seconds_total == 2
    padded = read_whole_file(path, cfg, min_samples=100 * DOWN)
    assert padded.audio.shape == (2, 100 * DOWN) and padded.padding_mask.sum() == 66150
    assert np.all(padded.audio[:, 66150:] == 0)


def test_latent_mask_marks_frames_touching_real_audio():
    mask = np.zeros(4096, bool)
    mask[:1500] = True
    assert latent_mask(mask, 1024).tolist() == [True, True, False, False]


def test_rerun_skips_complete_shards_and_redoes_missing_ones(encoded):
    cfg, out, _ = encoded
    encoder = PoolingEncoder()
    again = encode(cfg, out, encoder=encoder)
    assert again.shards_skipped == [0, 1, 2] and again.shards_written == [] and encoder.calls == 0
    os.remove(os.path.join(out, "shard-000001.npz"))
    again = encode(cfg, out, encoder=encoder)
    assert again.shards_written == [1] and again.shards_skipped == [0, 2] and encoder.calls == 1  # r2, r3 batched


def test_crops_of_a_multi_window_file_take_several_seconds_start_values_across_epochs(tmp_path):
    cfg = DataConfig(sources=[ramp_corpus(tmp_path / "audio", (10.0,))], window_samples=43 * DOWN)
    encode(cfg, str(tmp_path / "latents"))
    cfg.latents = str(tmp_path / "latents")
    seen = crops(cfg, epochs=12)
    for _, first, start, real in seen:
        assert start == first * DOWN // RATE  # floor(crop offset / sample rate)
        assert first * DOWN + 43 * DOWN <= 10 * RATE and real == 43  # inside the real audio
    starts = {start for _, _, start, _ in seen}
    assert len(starts) >= 4 and max(starts) >= 5, starts  # crops reach the whole song, not its first window
    assert len({first for _, first, _, _ in seen}) > 8  # a new crop (almost) every epoch
    assert crops(cfg, epochs=12) == seen  # reproducible per (seed, epoch, file)
    assert crops(cfg, epochs=12, seed=1) != seen


def test_latent_crop_is_the_audio_paths_crop_snapped_to_the_frame_grid(encoded):
    cfg, _, _ = encoded
    audio_offsets = []
    for batch in iter_local_batches(cfg, batch_size=1, seed=3, epochs=4, shuffle=False):
        frames = int(batch.seconds_total[0]) * RATE
        audio_offsets.append((batch.paths[0], round(batch.audio[0, 0, 0].item() * frames)))
    latent = crops(cfg, epochs=4, seed=3, shuffle=False)
    assert [p for p, _ in audio_offsets] == [p for p, *_ in latent]
    assert [offset // DOWN for _, offset in audio_offsets] == [first for _, first, _, _ in latent]
    assert len({offset for _, offset in audio_offsets}) > 5  # the files are longer than the window


def test_crop_start_takes_every_file_from_its_first_frame(encoded):
    cfg, _, _ = encoded
    cfg.crop = "start"
    assert {(first, start) for _, first, start, _ in crops(cfg, epochs=2)} == {(0, 0)}


def test_short_example_crop_keeps_its_padding_mask(encoded):
    cfg, _, _ = encoded
    cfg.window_samples = 64 * DOWN
    (batch,) = list(iter_local_latent_batches(cfg, "ae-1", batch_size=5, seed=0, shuffle=False))
    # r0 (1 s) is shorter than the window: padded, starting at 0, ceil(44100 / 1024) = 44 real frames.
    assert batch.padding_mask[0].sum() == 44 and batch.padding_mask[1].sum() == 64
    assert batch.seconds_start[0] == 0 and torch.all(batch.audio[0, :, 44:] == 0)
    assert batch.audio.shape == (5, 4, 64) and batch.seconds_total.tolist() == [1, 2, 4, 4, 3]


def test_a_different_autoencoder_is_refused(encoded):
    cfg, out, _ = encoded
    with pytest.raises(LatentFormatError, match="another autoencoder|Re-encode"):
        validate_shards(out, "ae-2")
    with pytest.raises(LatentFormatError, match="ae-2"):
        list(iter_local_latent_batches(cfg, "ae-2", 2, 0))
    with pytest.raises(LatentFormatError, match="new folder"):
        encode(cfg, out, identity="ae-2")


def set_format_version(path: str, version: int) -> None:
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays["metadata"]))
    meta["format_version"] = version
    arrays["metadata"] = np.array(json.dumps(meta))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    open(path, "wb").write(buffer.getvalue())


def test_shards_of_format_version_1_are_refused_with_a_re_encode_message(encoded):
    cfg, out, _ = encoded
    set_format_version(os.path.join(out, "shard-000002.npz"), 1)
    with pytest.raises(LatentFormatError, match="format version 1.*re-encode the dataset with `sa-train encode"):
        validate_shards(out, "ae-1")
    with pytest.raises(LatentFormatError, match="version 1.*new folder"):
        encode(cfg, out)  # a re-run must not mix the old shard into a new-format folder


def test_window_longer_than_the_encoded_short_files_is_refused(encoded):
    cfg, _, _ = encoded
    cfg.window_samples = 128 * DOWN  # r0 was padded only to the 64-frame encode window
    with pytest.raises(LatentFormatError, match="encode_window_samples >= 131072"):
        list(iter_local_latent_batches(cfg, "ae-1", 2, 0))


def test_encoder_with_the_wrong_downsampling_is_a_clear_error(tmp_path):
    cfg = DataConfig(sources=[ramp_corpus(tmp_path / "a", (1.0,))], window_samples=8 * DOWN)
    with pytest.raises(ValueError, match="downsampling"):
        encode(cfg, str(tmp_path / "out"), encoder=lambda audio: audio[:, :, ::512])


def test_bad_files_are_left_out_of_shards_and_counted(tmp_path):
    folder = tmp_path / "a"
    ramp_corpus(folder, (1.0, 2.0))
    (folder / "broken.wav").write_text("not audio")
    cfg = DataConfig(sources=[str(folder)], window_samples=8 * DOWN)
    summary = encode(cfg, str(tmp_path / "out"), shard_size=3)
    assert summary.examples == 2 and summary.bad_files.counts == {"unreadable": 1}
    shard = read_shard(ShardStore(str(tmp_path / "out")), "shard-000000.npz")
    assert shard["file_index"].tolist() == [1, 2]  # broken.wav sorts first and is left out


def test_identity_hashes_weights_and_config():
    weights = {"w": torch.ones(3), "b": torch.zeros(2, dtype=torch.bfloat16)}
    base = autoencoder_identity(weights, {"latent_channels": 4})
    assert base == autoencoder_identity({k: v.clone() for k, v in weights.items()}, {"latent_channels": 4})
    assert base != autoencoder_identity({**weights, "w": torch.tensor([1.0, 1.0, 1.001])}, {"latent_channels": 4})
    assert base != autoencoder_identity(weights, {"latent_channels": 8})


def test_shards_round_trip_through_a_uri_folder(tmp_path):
    cfg = DataConfig(sources=[ramp_corpus(tmp_path / "a", (2.0, 3.0))], window_samples=16 * DOWN,
                     encode_window_samples=64 * DOWN)
    out = f"file://{tmp_path}/uri_latents"
    assert encode(cfg, out).shards_written == [0]
    cfg.latents = out
    (batch,) = list(iter_local_latent_batches(cfg, "ae-1", batch_size=2, seed=0))
    assert batch.audio.shape == (2, 4, 16) and sorted(batch.prompts) == ["ramp 0", "ramp 1"]
    assert math.isclose(batch.padding_mask.float().mean().item(), 1.0)
    with pytest.raises(LatentFormatError, match="another autoencoder"):
        validate_shards(out, "ae-other")


def test_a_shard_whose_files_were_all_bad_trains_as_empty(tmp_path):
    folder = tmp_path / "a"
    ramp_corpus(folder, (1.0, 2.0))
    (folder / "broken.wav").write_text("not audio")
    cfg = DataConfig(sources=[str(folder)], window_samples=8 * DOWN, max_bad_fraction=0.5)
    assert encode(cfg, str(tmp_path / "out"), shard_size=1).shards_written == [0, 1, 2]
    cfg.latents = str(tmp_path / "out")
    _, meta = validate_shards(cfg.latents, "ae-1")
    assert meta["latent_channels"] == 4 and meta["min_frames"] == 44
    (batch,) = list(iter_local_latent_batches(cfg, "ae-1", batch_size=4, seed=0))
    assert sorted(batch.prompts) == ["ramp 0", "ramp 1"] and batch.audio.shape == (2, 4, 8)


def test_a_resumed_latent_stream_starts_with_the_next_epoch_instead_of_replaying(encoded, monkeypatch):
    """Rank 0 of a resumed run posts the examples already seen; the latent stream then skips every
    epoch begun before the restart (its rows are whole shards) instead of replaying the first batches."""
    import sa_train.data.pipeline as pipeline
    from sa_train.data.latents import _load_latent_batch, resumed_epochs, validate_shards, window_frames_for

    assert [resumed_epochs(n, 5) for n in (0, 1, 5, 6, 10)] == [0, 1, 1, 2, 2]
    cfg, out, _ = encoded
    names, meta = validate_shards(out, "ae-1")
    frames = window_frames_for(cfg, meta, out)

    def first_rows(seen: int) -> list:
        monkeypatch.setattr(pipeline, "data_start", lambda board: seen)
        batch = _load_latent_batch({"id": np.arange(len(names))}, out, names, frames, 0, True, "random",
                                   meta["latent_channels"], "board", meta["total_examples"])
        return [(str(p), float(lat[0, 0])) for p, lat in zip(batch["path"], batch["latents"])]

    fresh = first_rows(0)
    resumed = first_rows(3)  # 3 of 5 examples seen: epoch 0 was begun, the stream goes on with epoch 1
    assert meta["total_examples"] == 5 and len(fresh) == len(resumed) == 5
    assert resumed != fresh and sorted(p for p, _ in resumed) == sorted(p for p, _ in fresh)
    epoch1 = [(str(p), float(lat[0, 0])) for p, lat in zip(*(lambda b: (b["path"], b["latents"]))(
        _load_latent_batch({"id": np.arange(len(names), 2 * len(names))}, out, names, frames, 0, True, "random",
                           meta["latent_channels"])))]
    assert resumed == epoch1
