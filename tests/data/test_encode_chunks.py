"""Chunked encoding of whole files: seams match a whole-file encode, memory bounded by the chunk."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latent_helpers import DOWN, RATE, PoolingEncoder, encode, ramp_corpus
from sa_train.data.config import DataConfig
from sa_train.data.encode_chunks import (
    CHUNKED_ENCODE_TOLERANCE,
    context_frames_for,
    encode_waveforms,
    plan_chunks,
    receptive_field_samples,
)
from sa_train.data.latents import ShardStore, read_shard
from sa_train.models.autoencoder.config import AutoencoderConfig
from sa_train.models.autoencoder.vae import AutoencoderVAE


@pytest.fixture(scope="module")
def tiny_vae():
    torch.manual_seed(0)
    vae = AutoencoderVAE(AutoencoderConfig()).eval()  # the tiny VAE, random weights
    assert vae.downsampling == DOWN
    return vae


def noise(frames: int, seed: int = 0) -> np.ndarray:
    return (0.5 * np.random.default_rng(seed).standard_normal((2, frames * DOWN))).astype(np.float32)


def encode_one(audio, encode_fn, **kwargs) -> np.ndarray:
    (latents,) = list(encode_waveforms([audio], encode_fn, downsampling=DOWN, **kwargs))
    return latents


def test_plan_keeps_every_frame_once_with_context_inside_the_file():
    assert plan_chunks(10, 4, 2) == [(0, 6, 0, 4), (2, 10, 4, 8), (6, 10, 8, 10)]
    assert plan_chunks(10, 0, 2) == [(0, 10, 0, 10)] and plan_chunks(4, 4, 2) == [(0, 4, 0, 4)]


def test_context_covers_the_tiny_vae_receptive_field(tiny_vae):
    # input k7 + per stage (residual k7 at dilations 1, 3, 9 and the k=2*stride conv) + output k3
    assert receptive_field_samples(tiny_vae.encoder) == 15872
    assert context_frames_for(tiny_vae.encoder, DOWN) == 17


@pytest.mark.parametrize("frames", [96, 90])
def test_chunked_encode_matches_the_whole_file_encode_on_the_tiny_vae(tiny_vae, frames):
    audio = noise(frames)
    whole = encode_one(audio, tiny_vae.encode)
    context = context_frames_for(tiny_vae.encoder, DOWN)
    chunked = encode_one(audio, tiny_vae.encode, chunk_frames=16, context_frames=context)
    assert chunked.shape == whole.shape == (16, frames)
    assert np.abs(chunked - whole).max() <= CHUNKED_ENCODE_TOLERANCE  # measured 1.5e-7


def test_chunk_seams_without_context_do_not_match(tiny_vae):
    audio = noise(64)
    whole = encode_one(audio, tiny_vae.encode)
    assert np.abs(encode_one(audio, tiny_vae.encode, chunk_frames=16, context_frames=0) - whole).max() > 1e-2


def test_chunked_and_whole_encodes_agree_in_the_shards(tiny_vae, tmp_path):
    cfg = DataConfig(sources=[ramp_corpus(tmp_path / "audio", (3.0, 1.0, 2.5))], window_samples=32 * DOWN)
    whole = encode(cfg, str(tmp_path / "whole"), encoder=tiny_vae.encode, shard_size=3)
    chunked = encode(cfg, str(tmp_path / "chunked"), encoder=tiny_vae.encode, shard_size=3,
                     chunk_frames=24, context_frames=context_frames_for(tiny_vae.encoder, DOWN))
    assert whole.examples == chunked.examples == 3
    a = read_shard(ShardStore(str(tmp_path / "whole")), "shard-000000.npz")
    b = read_shard(ShardStore(str(tmp_path / "chunked")), "shard-000000.npz")
    assert a["frame_offsets"].tolist() == b["frame_offsets"].tolist() == [0, 130, 174, 282]
    # float16 storage: at most one float16 step apart (measured 3e-5 for latents up to 0.25)
    np.testing.assert_allclose(a["latents"].astype(np.float32), b["latents"].astype(np.float32), rtol=0, atol=1e-3)


def test_a_five_minute_song_never_goes_through_the_encoder_whole():
    encoder = PoolingEncoder()
    frames = 5 * 60 * RATE // DOWN  # 12,919 frames
    audio = np.zeros((2, frames * DOWN), np.float32)
    audio[:, ::DOWN] = np.arange(frames, dtype=np.float32)  # frame f pools to f / 1024
    latents = encode_one(audio, encoder, chunk_frames=1024, context_frames=32, batch_size=4)
    assert latents.shape == (4, frames)
    np.testing.assert_allclose(latents[0], np.arange(frames) / DOWN)
    assert max(shape[-1] for shape in encoder.shapes) == (1024 + 2 * 32) * DOWN
    assert max(shape[0] for shape in encoder.shapes) == 4


def test_equal_length_files_are_batched_and_come_back_in_order():
    encoder = PoolingEncoder()
    waveforms = [np.full((2, 8 * DOWN), i, np.float32) for i in range(3)] + [np.full((2, 5 * DOWN), 3, np.float32)]
    out = list(encode_waveforms(iter(waveforms), encoder, downsampling=DOWN, batch_size=4))
    assert [lat[0, 0] for lat in out] == [0, 1, 2, 3] and [lat.shape[-1] for lat in out] == [8, 8, 8, 5]
    assert sorted(encoder.shapes) == [(1, 2, 5 * DOWN), (3, 2, 8 * DOWN)]
