"""Helpers of the latent tests: a stand-in encoder and files whose latents reveal their position."""

from __future__ import annotations

import numpy as np
import soundfile
import torch

from sa_train.data.config import DataConfig
from sa_train.data.encode import DecodedRows, encode_to_shards, encode_window
from sa_train.data.pipeline import load_records

DOWN = 1024
RATE = 44100


class PoolingEncoder:
    """A stand-in autoencoder: mean of each 1024-sample block, channels (L, R, 2L, 2R); records
    the shape of every batch it encodes."""

    def __init__(self):
        self.shapes: list[tuple[int, ...]] = []

    @property
    def calls(self) -> int:
        return len(self.shapes)

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(audio.shape))
        b, c, t = audio.shape
        pooled = audio.reshape(b, c, t // DOWN, DOWN).mean(-1)
        return torch.cat([pooled, 2 * pooled], dim=1)


def ramp_corpus(folder, seconds=(1.0, 2.0, 4.0, 4.0, 3.0)) -> str:
    """Files whose sample i is i / frames (per file), so a latent frame reveals its position."""
    folder.mkdir(exist_ok=True)
    for i, s in enumerate(seconds):
        frames = int(s * RATE)
        ramp = (np.arange(frames) / frames).astype(np.float32)
        soundfile.write(str(folder / f"r{i}.wav"), np.stack([ramp, ramp], 1), RATE, subtype="FLOAT")
        (folder / f"r{i}.txt").write_text(f"ramp {i}")
    return str(folder)


def ramp_frame(value: float, file_samples: int) -> int:
    """The latent frame whose pooled ramp value is ``value`` (mean of samples f*1024 .. f*1024+1023)."""
    return round((value * file_samples - (DOWN - 1) / 2) / DOWN)


def encode(cfg: DataConfig, out: str, identity: str = "ae-1", encoder=None, shard_size: int = 2, **kwargs):
    """encode_to_shards over the decoded files of ``cfg.sources``."""
    records = load_records(cfg)
    rows = DecodedRows([r.path for r in records], [r.prompt for r in records], cfg, encode_window(cfg, DOWN))
    return encode_to_shards(rows, encoder or PoolingEncoder(), identity, out, shard_size, downsampling=DOWN,
                            sample_rate=RATE, **kwargs)
