"""The batch contract: column dicts from Ray Data in, typed tensors out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sa_train.data.batch import AudioBatch


def columns(n=3, length=64, latents=False):
    key = "latents" if latents else "audio"
    return {
        key: np.random.default_rng(0).standard_normal((n, 4 if latents else 2, length)).astype(np.float16 if latents else np.float32),
        "padding_mask": np.ones((n, length), bool),
        "prompt": np.array([f"prompt {i}" for i in range(n)], dtype=object),
        "seconds_start": np.arange(n),
        "seconds_total": np.arange(n) + 10,
        "path": np.array([f"/x/{i}.wav" for i in range(n)], dtype=object),
    }


def test_numpy_columns_become_typed_tensors():
    batch = AudioBatch.from_numpy_dict(columns())
    assert batch.audio.shape == (3, 2, 64) and batch.audio.dtype == torch.float32
    assert batch.padding_mask.dtype == torch.bool and batch.padding_mask.shape == (3, 64)
    assert batch.seconds_start.dtype == torch.long and batch.seconds_total.tolist() == [10, 11, 12]
    assert batch.prompts == ["prompt 0", "prompt 1", "prompt 2"] and batch.paths[2] == "/x/2.wav"
    assert not batch.is_latent and len(batch) == 3


def test_latent_columns_set_is_latent_and_become_float32():
    batch = AudioBatch.from_numpy_dict(columns(latents=True))
    assert batch.is_latent and batch.audio.dtype == torch.float32 and batch.audio.shape == (3, 4, 64)


def test_round_trip_through_numpy_keeps_values():
    batch = AudioBatch.from_numpy_dict(columns())
    again = AudioBatch.from_numpy_dict(batch.to_numpy_dict())
    assert torch.equal(again.audio, batch.audio) and again.prompts == batch.prompts


def test_tensor_columns_from_iter_torch_batches_are_accepted():
    cols = {k: (torch.from_numpy(v) if v.dtype != object else list(v)) for k, v in columns().items()}
    assert AudioBatch.from_numpy_dict(cols).audio.shape == (3, 2, 64)


def test_mismatched_mask_is_a_clear_error():
    cols = columns()
    cols["padding_mask"] = cols["padding_mask"][:, :10]
    with pytest.raises(ValueError, match="padding_mask"):
        AudioBatch.from_numpy_dict(cols)


def test_missing_columns_are_named():
    cols = columns()
    del cols["seconds_total"]
    with pytest.raises(ValueError, match="seconds_total"):
        AudioBatch.from_numpy_dict(cols)


def test_to_moves_every_tensor():
    batch = AudioBatch.from_numpy_dict(columns()).to("cpu")
    assert batch.audio.device.type == "cpu" and batch.seconds_start.device.type == "cpu"
