"""A real local Ray instance and the synthetic dataset, shared by the integration tests."""

from __future__ import annotations

import os

import pytest

from sa_train.config import load_config

# Small enough for 2 CPU workers on a laptop: 8192-sample VAE crops, 32-frame latent windows.
AUTOENCODER_OVERRIDES = [
    "training.stage=autoencoder", "data.window_samples=8192", "training.global_batch_size=2",
    "model.autoencoder.losses.stft_fft_sizes=[512,128]", "model.autoencoder.losses.discriminator_fft_sizes=[256]",
    "training.adversarial_start_step=1", "training.sample_prompts=[a sine tone]", "training.sample_seconds=[0.5]",
]
DIFFUSION_OVERRIDES = [
    "training.stage=diffusion", "data.window_samples=32768", "training.global_batch_size=4",
    "model.sampling.steps=4", "training.sample_prompts=[a sine tone at A4]", "training.sample_seconds=[0.5]",
]


@pytest.fixture(scope="session")
def ray_local(ray_session):
    """The suite's one local Ray instance (tests/conftest.py)."""
    return ray_session


@pytest.fixture(scope="session")
def synth_manifest(tmp_path_factory):
    from sa_train.data.synth import write_synth_dataset

    folder = tmp_path_factory.mktemp("synth")
    write_synth_dataset(str(folder), 8, seed=0, max_seconds=1.5)
    return folder / "manifest.jsonl"


def make_config(tmp_path, synth_manifest, stage_overrides, *extra):
    return load_config(None, [
        f"data.sources=[{synth_manifest}]", f"storage.path={tmp_path / 'runs'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "distributed.num_workers=2", "distributed.device=cpu",
        "training.log_every=1", *stage_overrides, *extra,
    ])
