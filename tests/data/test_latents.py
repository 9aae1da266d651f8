"""Latent shards: round trip, resumable encoding, random latent crops, refusal of other autoencoders."""

from __future__ import annotations

import io
import json
import math
import os

import numpy as np
import pytest
import soundfile
import torch

from sa_train.data.config import DataConfig
from sa_train.data.encode import DecodedRows, encode_to_shards, encode_window, latent_mask
from sa_train.data.latents import (
    LatentFormatError,
    autoencoder_identity,
    iter_local_latent_batches,
    read_shard,
    validate_shards,
    ShardStore,
)
from sa_train.data.pipeline import load_records

DOWN = 1024
RATE = 44100


class PoolingEncoder:
    """A stand-in autoencoder: mean of each 1024-sample block, channels (L, R, 2L, 2R)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        b, c, t = audio.shape
        pooled = audio.reshape(b, c, t // DOWN, DOWN).mean(-1)
        return torch.cat([pooled, 2 * pooled], dim=1)


def ramp_corpus(folder, seconds=(1.0, 2.0, 4.0, 4.0, 3.0)):
    """Files whose sample i is i / frames (per file), so a latent frame reveals its position."""
    folder.mkdir(exist_ok=True)
    for i, s in enumerate(seconds):
        frames = int(s * RATE)
        ramp = (np.arange(frames) / frames).astype(np.float32)
        soundfile.write(str(folder / f"r{i}.wav"), np.stack([ramp, ramp], 1), RATE, subtype="FLOAT")
        (folder / f"r{i}.txt").write_text(f"ramp {i}")
    return str(folder)


def encode(cfg, out, identity="ae-1", encoder=None, shard_size=2):
    records = load_records(cfg)
    rows = DecodedRows([r.path for r in records], [r.prompt for r in records], cfg, encode_window(cfg, DOWN))
    return encode_to_shards(rows, encoder or PoolingEncoder(), identity, out, shard_size, downsampling=DOWN, sample_rate=RATE)


@pytest.fixture
def encoded(tmp_path):
    cfg = DataConfig(sources=[ramp_corpus(tmp_path / "audio")], window_samples=16 * DOWN, encode_window_samples=128 * DOWN)
    out = str(tmp_path / "latents")
    summary = encode(cfg, out)
    cfg.latents = out
    return cfg, out, summary


def test_shards_hold_half_precision_latents_masks_and_conditioning(encoded):
    cfg, out, summary = encoded
    assert summary.shards_written == [0, 1, 2] and summary.examples == 5
    shard = read_shard(ShardStore(out), "shard-000000.npz")
    assert shard["latents"].dtype == np.float16 and shard["latents"].shape == (2, 4, 128)
    # r0 is 1 s = 44100 samples -> ceil(44100 / 1024) = 44 real latent frames.
    assert shard["padding_mask"][0].sum() == math.ceil(RATE / DOWN) and shard["padding_mask"][1].sum() == 87
    assert list(shard["prompt"]) == ["ramp 0", "ramp 1"] and list(shard["seconds_total"]) == [1, 2]
    assert shard["metadata"]["autoencoder_identity"] == "ae-1" and shard["metadata"]["downsampling"] == DOWN
    np.testing.assert_allclose(shard["latents"][1, 0, 10], (10 * DOWN + 511.5) / (2 * RATE), rtol=2e-3)
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temporary files left


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
    assert again.shards_written == [1] and again.shards_skipped == [0, 2] and encoder.calls == 1


def test_latent_crops_have_the_window_length_and_updated_seconds_start(encoded):
    cfg, _, _ = encoded
    starts = {}
    for epoch_batches in (list(iter_local_latent_batches(cfg, "ae-1", batch_size=5, seed=s)) for s in (0, 1, 2)):
        (batch,) = epoch_batches
        assert batch.is_latent and batch.audio.shape == (5, 4, 16) and batch.padding_mask.shape == (5, 16)
        for path, latents, start, total in zip(batch.paths, batch.audio, batch.seconds_start, batch.seconds_total):
            frames = total.item() * RATE  # every ramp file lasts whole seconds
            first_frame = round(latents[0, 0].item() * frames / DOWN - 511.5 / DOWN)
            assert start.item() == math.floor(first_frame * DOWN / RATE), path
            assert first_frame + 16 <= math.ceil(min(frames, 128 * DOWN) / DOWN)  # within the real frames
            starts.setdefault(path, set()).add(first_frame)
    assert all(len(s) > 1 for s in starts.values())  # each seed draws other crops


def test_short_example_crop_keeps_its_padding_mask(encoded):
    cfg, _, _ = encoded
    cfg.window_samples = 64 * DOWN
    (batch,) = list(iter_local_latent_batches(cfg, "ae-1", batch_size=5, seed=0, shuffle=False))
    assert batch.padding_mask[0].sum() == 44 and batch.padding_mask[1].sum() == 64


def test_a_different_autoencoder_is_refused(encoded):
    cfg, out, _ = encoded
    with pytest.raises(LatentFormatError, match="another autoencoder|Re-encode"):
        validate_shards(out, "ae-2")
    with pytest.raises(LatentFormatError, match="ae-2"):
        list(iter_local_latent_batches(cfg, "ae-2", 2, 0))
    with pytest.raises(LatentFormatError, match="new folder"):
        encode(cfg, out, identity="ae-2")


def test_a_different_format_version_is_refused(encoded):
    _, out, _ = encoded
    path = os.path.join(out, "shard-000002.npz")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays["metadata"]))
    meta["format_version"] = 99
    arrays["metadata"] = np.array(json.dumps(meta))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    open(path, "wb").write(buffer.getvalue())
    with pytest.raises(LatentFormatError, match="format version 99"):
        validate_shards(out, "ae-1")


def test_window_longer_than_the_encoded_audio_is_refused(encoded):
    cfg, _, _ = encoded
    cfg.window_samples = 256 * DOWN
    with pytest.raises(LatentFormatError, match="encode_window_samples"):
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
    with pytest.raises(LatentFormatError, match="another autoencoder"):
        validate_shards(out, "ae-other")
