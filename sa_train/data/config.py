"""Config of the training data (section ``data``), owned by this package."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from sa_train.config.fields import param


@dataclass
class DataConfig:
    """Where audio comes from and how it is decoded, cropped and captioned."""

    sources: List[str] = param(
        [],
        "audio folders, manifests (.jsonl/.csv with path and caption) or URIs (s3://, gs://); "
        "empty in the demo, which writes the synthetic dataset and points here",
    )
    latents: Optional[str] = param(
        None, "pre-encoded latent shards (sa-train encode --out); when set, diffusion reads these instead of audio"
    )
    sample_rate: int = param(44100, "sample rate (Hz) audio is resampled to", min=1)
    channels: int = param(2, "channels audio is brought to (mono is duplicated)", min=1)
    extra_channels: str = param(
        "downmix", "what to do with more channels than `channels`: 'downmix' or 'truncate'", choices=["downmix", "truncate"]
    )
    window_samples: int = param(
        131072, "training window in samples; shorter files are padded with silence (paper: 4194304 = 95.1 s)", min=1
    )
    crop: str = param("random", "where the window starts in a longer file: 'random' or 'start'", choices=["random", "start"])
    end_crop_probability: float = param(
        0.0,
        "audio windows only: probability that a random crop of a file longer than the window ends past the file's "
        "end instead (its last 1 to window-1 samples, then silence marked as padding), so an autoencoder learns to "
        "end a sound and to decode the silence after it, which generation asks of it after seconds_total; "
        "0 = every crop inside the file",
        min=0,
        max=1,
    )
    min_seconds: float = param(0.5, "files shorter than this (seconds) are skipped as bad", min=0)
    prompt_template: str = param(
        "{caption}", "prompt built from metadata fields, e.g. '{caption}, {genre}, {bpm} BPM'"
    )
    phase_flip_probability: float = param(0.0, "probability of inverting the waveform's sign (augmentation)", min=0, max=1)
    max_bad_fraction: float = param(
        0.01, "stop with an error when more than this fraction of files is unreadable or invalid", min=0, max=1
    )
    encode_window_samples: int = param(
        0,
        "sa-train encode stores every file whole; files shorter than this (samples) are padded with silence to it "
        "first, as the audio path pads a short window, so diffusion can train on latent windows up to this long; "
        "0 = window_samples",
        min=0,
    )
    encode_chunk_samples: int = param(
        1048576,
        "audio samples the encoder sees at once (plus context on each side) when sa-train encode encodes a longer "
        "file; bounds memory, a multiple of the autoencoder downsampling; 0 = each file in one pass",
        min=0,
    )
    latent_shard_size: int = param(256, "examples per latent shard written by sa-train encode", min=1)
    manifest_reader: str = param(
        "auto",
        "how manifests are read: 'driver' (every row into the driver: small corpora), 'ray_data' (Ray Data read "
        "tasks; the driver checks only the columns and holds block references: large corpora), 'auto' = ray_data "
        "when every source is a manifest and one is Parquet, remote or over 8 MiB",
        choices=["auto", "driver", "ray_data"],
    )
    shuffle_buffer_files: int = param(
        16384,
        "files mixed by the local shuffle buffer of a manifest read through Ray Data: each epoch visits the "
        "manifest's blocks in a new order and shuffles the files within each window of this many; a smaller "
        "manifest is shuffled whole",
        min=2,
    )
    read_parallelism: int = param(0, "Ray Data tasks that decode audio; 0 = Ray decides", min=0)
    preserve_order: bool = param(
        True,
        "deal the training stream's examples to the ranks in the same order on every run, so a rerun of a config "
        "trains the same model; false hands each rank blocks as they finish decoding, near the node that reads "
        "them (less cross-node traffic on a multi-node cluster), and runs no longer reproduce",
    )
    prefetch_batches: int = param(2, "batches prefetched per worker", min=0)
