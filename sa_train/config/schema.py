"""The whole experiment config: one typed section per owning module.

    model.autoencoder   sa_train.models.autoencoder.config
    model.conditioning  sa_train.models.conditioners.config
    model.unet          sa_train.models.unet.config
    model.diffusion     sa_train.diffusion.config
    model.sampling      sa_train.diffusion.config
    data                sa_train.data.config
    training            sa_train.training.config
    distributed         sa_train.distributed.config
    tracking            sa_train.tracking.config
    storage             sa_train.config.storage

The defaults of every section together are the tiny embedded default that `sa-train demo` trains
on a laptop CPU; presets in configs/ override them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sa_train.config.fields import section
from sa_train.config.storage import StorageConfig
from sa_train.data.config import DataConfig
from sa_train.diffusion.config import DiffusionConfig, SamplingConfig
from sa_train.distributed.config import DistributedConfig
from sa_train.models.autoencoder.config import AutoencoderConfig
from sa_train.models.conditioners.config import ConditioningConfig
from sa_train.models.unet.config import UNetConfig
from sa_train.tracking.config import TrackingConfig
from sa_train.training.config import TrainingConfig


@dataclass
class ModelConfig:
    """The model: autoencoder, conditioners, U-Net, diffusion objective and sampler."""

    autoencoder: AutoencoderConfig = section(AutoencoderConfig, "the VAE (or none, for waveform diffusion)")
    conditioning: ConditioningConfig = section(ConditioningConfig, "text and timing conditioning")
    unet: UNetConfig = section(UNetConfig, "the diffusion U-Net")
    diffusion: DiffusionConfig = section(DiffusionConfig, "the diffusion objective and CFG dropout")
    sampling: SamplingConfig = section(SamplingConfig, "generation settings")


@dataclass
class ExperimentConfig:
    """A complete, resolved training configuration."""

    model: ModelConfig = section(ModelConfig, "the model")
    data: DataConfig = section(DataConfig, "the training data")
    training: TrainingConfig = section(TrainingConfig, "the training run")
    distributed: DistributedConfig = section(DistributedConfig, "workers and DeepSpeed")
    tracking: TrackingConfig = section(TrackingConfig, "MLflow tracking")
    storage: StorageConfig = section(StorageConfig, "run and checkpoint storage")
