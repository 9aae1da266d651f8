"""Validation of a resolved config: per-field constraints from metadata, then cross-field rules.

Everything here runs before any Ray worker starts; each problem raises :class:`ConfigError`
with a message that names the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

from sa_train.config.fields import ConfigError
from sa_train.config.schema import ExperimentConfig
from sa_train.diffusion.config import check_diffusion
from sa_train.models.conditioners.config import check_conditioning


def iter_fields(obj: Any, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """Yield (dotted key, field, value) for every leaf field of a nested config dataclass."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from iter_fields(value, key + ".")
        else:
            yield key, f, value


def _check_value(key: str, meta: dict, value: Any) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {allowed}")
    lo, hi = meta.get("min"), meta.get("max")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if lo is not None and (value < lo or (meta.get("min_exclusive") and value == lo)):
        bound = f"> {lo}" if meta.get("min_exclusive") else f">= {lo}"
        raise ConfigError(f"{key}={value!r} is out of range; it must be {bound}")
    if hi is not None and value > hi:
        raise ConfigError(f"{key}={value!r} is out of range; it must be <= {hi}")


def check_fields(cfg: Any) -> None:
    """Check every field against the choices and bounds declared with :func:`param`."""
    for key, f, value in iter_fields(cfg):
        meta = dict(f.metadata)
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                _check_value(f"{key}[{i}]", meta, item)
        else:
            _check_value(key, meta, value)


def check_consistency(cfg: ExperimentConfig) -> None:
    """Rules that span fields or sections."""
    ae, unet, data, training = cfg.model.autoencoder, cfg.model.unet, cfg.data, cfg.training

    if len(unet.multipliers) < 2:
        raise ConfigError(
            f"model.unet.multipliers={unet.multipliers} needs at least 2 entries (levels + bottleneck)"
        )
    if len(unet.factors) != len(unet.multipliers) - 1:
        raise ConfigError(
            f"model.unet.factors has {len(unet.factors)} entries but model.unet.multipliers has "
            f"{len(unet.multipliers)}; factors needs one per level, len(multipliers) - 1 = {len(unet.multipliers) - 1}"
        )
    if len(unet.attention_blocks) != len(unet.multipliers):
        raise ConfigError(
            f"model.unet.attention_blocks has {len(unet.attention_blocks)} entries; it needs one per "
            f"multiplier ({len(unet.multipliers)}, the last for the bottleneck)"
        )
    for key, width in (("model.unet.base_width", unet.base_width), ("model.unet.context_width", unet.context_width)):
        if width % unet.num_heads:
            raise ConfigError(f"{key}={width} is not divisible by model.unet.num_heads={unet.num_heads}")
    for i, m in enumerate(unet.multipliers):
        if (unet.base_width * m) % unet.num_heads:
            raise ConfigError(
                f"model.unet level {i} width base_width x multipliers[{i}] = {unet.base_width * m} "
                f"is not divisible by model.unet.num_heads={unet.num_heads}"
            )

    if training.stage == "autoencoder" and ae.kind == "none":  # before the channel rules it makes moot
        raise ConfigError("training.stage=autoencoder needs model.autoencoder.kind=vae, not 'none'")

    expected_in = ae.latent_channels if ae.kind == "vae" else data.channels
    source = "model.autoencoder.latent_channels" if ae.kind == "vae" else "data.channels (no autoencoder)"
    if unet.in_channels != expected_in:
        raise ConfigError(
            f"model.unet.in_channels={unet.in_channels} differs from {source}={expected_in}; set them equal"
        )
    if ae.kind == "vae" and ae.audio_channels != data.channels:
        raise ConfigError(
            f"model.autoencoder.audio_channels={ae.audio_channels} differs from data.channels={data.channels}"
        )

    if training.stage == "diffusion":
        total = ae.downsampling * unet.downsampling
        if data.window_samples % total:
            lower = data.window_samples // total * total
            raise ConfigError(
                f"data.window_samples={data.window_samples} is not divisible by autoencoder downsampling "
                f"({ae.downsampling}) x U-Net downsampling ({unet.downsampling}) = {total}; "
                f"use a multiple of {total}, e.g. {max(lower, total)}"
            )
        if data.latents is not None and data.end_crop_probability > 0:
            raise ConfigError(
                f"data.end_crop_probability={data.end_crop_probability} applies to audio windows, but this run reads "
                f"pre-encoded latents (data.latents={data.latents}), whose windows come from the stored files and "
                "their encoded padding; set data.end_crop_probability=0 or train on audio"
            )
        if ae.kind == "vae" and ae.pretrained is None and data.latents is None:
            raise ConfigError(
                "training.stage=diffusion needs a trained autoencoder or pre-encoded latents: set "
                "model.autoencoder.pretrained=<exported folder> or data.latents=<shards>, "
                "or model.autoencoder.kind=none for waveform diffusion"
            )
    elif data.window_samples % ae.downsampling:
        raise ConfigError(
            f"data.window_samples={data.window_samples} is not divisible by the autoencoder downsampling "
            f"{ae.downsampling} (product of model.autoencoder.strides)"
        )

    workers, accum = cfg.distributed.num_workers, training.grad_accum_steps
    if training.global_batch_size % (workers * accum):
        raise ConfigError(
            f"training.global_batch_size={training.global_batch_size} is not divisible by "
            f"distributed.num_workers ({workers}) x training.grad_accum_steps ({accum}) = {workers * accum}; "
            f"the per-worker micro-batch must be a whole number"
        )
    if cfg.distributed.offload_params != "none" and cfg.distributed.zero_stage != 3:
        raise ConfigError(
            f"distributed.offload_params={cfg.distributed.offload_params!r} needs distributed.zero_stage=3 "
            f"(it is {cfg.distributed.zero_stage})"
        )
    check_conditioning(cfg.model.conditioning)
    check_diffusion(cfg.model.diffusion)
    sampling = cfg.model.sampling
    if sampling.sigma_min >= sampling.sigma_max:
        raise ConfigError(
            f"model.sampling.sigma_min={sampling.sigma_min} must be below model.sampling.sigma_max={sampling.sigma_max}"
        )
    if len(training.optimizer.betas) != 2:
        raise ConfigError(f"training.optimizer.betas={training.optimizer.betas} needs exactly 2 values")
    if len(training.discriminator_optimizer.betas) != 2:
        raise ConfigError(
            f"training.discriminator_optimizer.betas={training.discriminator_optimizer.betas} needs exactly 2 values"
        )


def validate(cfg: ExperimentConfig) -> ExperimentConfig:
    """Check a resolved config; returns it unchanged or raises ConfigError."""
    check_fields(cfg)
    check_consistency(cfg)
    return cfg
