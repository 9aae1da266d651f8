"""The two training stages as tasks: what one micro-step computes, on top of DeepSpeed engines.

A task owns its models, engines, EMA and stage-specific randomness; the worker loop
(:mod:`sa_train.training.worker`) owns data, progress, checkpoints and logging. Tasks take the
typed batch contract (:class:`sa_train.data.batch.AudioBatch`) and know nothing of Ray or MLflow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from torch import nn

from sa_train.config import ExperimentConfig
from sa_train.data.batch import AudioBatch
from sa_train.diffusion.objective import loss_mask_for, v_objective_loss
from sa_train.diffusion.schedule import TimeSampler
from sa_train.models.diffusion_model import (
    DiffusionModel,
    build_autoencoder,
    initial_autoencoder,
    initial_diffusion_model,
)
from sa_train.training.deepspeed_config import resolve_precision
from sa_train.training.engines import agree_finite_means, full_fp32_weights, make_engine
from sa_train.training.master_weights import master_partitions
from sa_train.training.random_streams import RandomStreams, stream_seed
from sa_train.training.sharded_ema import ShardedEMA

logger = logging.getLogger(__name__)


@dataclass
class StepResult:
    """What one micro-step did."""

    boundary: bool  # an optimizer step was taken (end of gradient accumulation)
    skipped: bool = False  # a loss was not finite on some rank: no engine stepped, nothing was applied
    metrics: dict[str, float] = field(default_factory=dict)  # at a boundary: means over all ranks


def autocast(precision: str):
    """bf16/fp16 autocast on GPU (DeepSpeed keeps the fp32 master weights); a no-op in fp32."""
    enabled = precision in ("bf16", "fp16") and torch.cuda.is_available()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype, enabled=enabled)


def latent_padding_mask(mask: torch.Tensor, downsampling: int) -> torch.Tensor:
    """(B, T) sample mask -> (B, T / downsampling) frame mask: a frame is real if any of its samples is."""
    if downsampling == 1:
        return mask
    batch, samples = mask.shape
    return mask.reshape(batch, samples // downsampling, downsampling).any(dim=-1)


class TrainedModelTask:
    """What both stages share: the engine of the model that is exported, its EMA (each rank keeps
    the EMA of its own fp32 master partition), and the rank's own random streams."""

    ema: Optional[ShardedEMA]
    streams: RandomStreams

    def _seed_rank(self, seed: int, rank: int, device: torch.device) -> None:
        """After the identical initial weights: this rank's own streams, and a global RNG that
        differs per rank too (for anything random that takes no generator)."""
        self.streams = RandomStreams(seed, rank, device)
        torch.manual_seed(stream_seed(seed, rank, "global"))

    def _build_ema(self) -> None:
        """Every rank: the EMA of its own master partition, from the engine's initial weights."""
        ema_cfg = self.cfg.training.ema
        engine = self.exported_engine()
        self.ema = ShardedEMA(engine, ema_cfg.decay, ema_cfg.start_step) if ema_cfg.enabled else None
        self._master = self.ema.partitions if self.ema is not None else master_partitions(engine)

    def stream_state(self) -> dict[str, torch.Tensor]:
        return self.streams.state_tensors()

    def load_stream_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.streams.load_state_tensors(tensors)

    def sampling_weights(self) -> Optional[dict[str, torch.Tensor]]:
        """Weights to sample with on rank 0 (None elsewhere): the EMA, else the trained weights.
        Collective: every rank calls it."""
        return self.ema_weights() if self.ema is not None else self.exported_weights()

    def exported_engine(self):
        raise NotImplementedError

    def update_ema(self, step: int) -> None:
        """Fold the new weights into the EMA: each rank its own partition, no communication."""
        if self.ema is not None:
            self.ema.update(step)

    def exported_weights(self) -> Optional[dict[str, torch.Tensor]]:
        """Full fp32 weights of the trained model on rank 0, None elsewhere (collective)."""
        return full_fp32_weights(self.exported_engine(), self._master)

    def ema_weights(self) -> Optional[dict[str, torch.Tensor]]:
        """The full EMA on rank 0, None elsewhere or without an EMA (collective)."""
        return self.ema.full_weights() if self.ema is not None else None

    def load_ema(self, path) -> None:
        """Every rank takes its own partition out of a checkpoint's full EMA file."""
        if self.ema is not None:
            self.ema.load_file(path)


class DiffusionTask(TrainedModelTask):
    """The U-Net (+ trainable conditioning) on latents of a frozen autoencoder, v-objective, CFG dropout."""

    stage = "diffusion"

    def __init__(self, cfg: ExperimentConfig, device: torch.device, rank: int, world_size: int, on_gpu: bool,
                 autoencoder: Optional[nn.Module] = None):
        self.cfg, self.device, self.rank = cfg, device, rank
        self.precision = resolve_precision(cfg, on_gpu)
        model = initial_diffusion_model(cfg.model, cfg.training.seed).to(device)  # the same on every rank
        self.engine = make_engine(model, cfg, cfg.training.optimizer, world_size, on_gpu)
        self.engines = {"model": self.engine}
        self._build_ema()
        self.autoencoder = autoencoder
        if self.autoencoder is not None:
            self.autoencoder.to(device).eval().requires_grad_(False)
        self.downsampling = cfg.model.autoencoder.downsampling
        self.time_sampler = TimeSampler(cfg.model.diffusion.time_sampling, seed=cfg.training.seed * 9973 + rank)
        self._seed_rank(cfg.training.seed, rank, device)
        self._accum_loss: list[float] = []

    def exported_engine(self):
        return self.engine

    def to_latents(self, batch: AudioBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean latents (B, C, F) and their frame mask (B, F)."""
        x = batch.audio.to(self.device, non_blocking=True)
        mask = batch.padding_mask.to(self.device)
        if batch.is_latent:
            return x.float(), mask
        if self.autoencoder is None:  # waveform diffusion
            return x, mask
        with torch.no_grad():
            latents = self.autoencoder.encode(x)
        return latents.float(), latent_padding_mask(mask, self.downsampling)

    def draw_noise(self, x0: torch.Tensor) -> torch.Tensor:
        """The diffusion noise of a batch, from this rank's own stream."""
        return torch.randn(x0.shape, generator=self.streams["noise"], device=x0.device, dtype=x0.dtype)

    def micro_step(self, batch: AudioBatch) -> StepResult:
        x0, mask = self.to_latents(batch)
        t = self.time_sampler(x0.shape[0]).to(self.device)
        noise = self.draw_noise(x0)
        diffusion = self.cfg.model.diffusion
        # Padded frames count by default: the model learns the silence after seconds_total.
        loss_mask = loss_mask_for(mask, diffusion, self.streams["loss_mask"])

        def model_fn(x_t: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
            return self.engine(
                x_t, times, batch.prompts, batch.seconds_start.to(self.device), batch.seconds_total.to(self.device),
                cfg_dropout=diffusion.cfg_dropout, generator=self.streams["cfg_dropout"],
            )

        with autocast(self.precision):
            per_example = v_objective_loss(model_fn, x0, t, noise, loss_mask)
        loss = per_example.mean()
        global_means = agree_finite_means({"loss": loss})  # None: non-finite on some rank
        if global_means is None:
            return StepResult(boundary=False, skipped=True)
        self.engine.backward(loss)
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()
        self._accum_loss.append(global_means["loss"])
        if not boundary:
            return StepResult(boundary=False)
        metrics = {"loss": sum(self._accum_loss) / len(self._accum_loss)}
        metrics["lr"] = float(self.engine.get_lr()[0])
        metrics["grad_norm"] = float(self.engine.get_global_grad_norm() or 0.0)
        self._accum_loss.clear()
        return StepResult(boundary=True, metrics=metrics)

    def sample_audio(self, weights: dict[str, torch.Tensor]) -> list[tuple[str, "np.ndarray", int]]:
        """Rank 0: generations of the model with ``weights`` (:meth:`sampling_weights`) for the
        configured prompts and durations."""
        from sa_train.export import load_weights
        from sa_train.generation import Generator, slug

        training = self.cfg.training
        if self.autoencoder is None and self.cfg.model.autoencoder.kind == "vae":
            if not self.cfg.model.autoencoder.pretrained:
                logger.warning("no autoencoder to decode samples with (training on latents without "
                               "model.autoencoder.pretrained): audio samples are skipped")
                return []
            from sa_train.export import load_exported

            self.autoencoder = load_exported(self.cfg.model.autoencoder.pretrained, expect_stage="autoencoder").model
        model = DiffusionModel(self.cfg.model)
        load_weights(model, weights, "the training EMA")
        seconds = [training.sample_seconds[i % len(training.sample_seconds)] for i in range(len(training.sample_prompts))]
        clips = Generator(model, self.autoencoder, self.cfg, self.device).generate(training.sample_prompts, seconds)
        return [(f"{i:02d}_{slug(c.prompt)}", c.audio, c.sample_rate) for i, c in enumerate(clips)]

    def extra_state(self) -> dict:
        return {"time_sampler": self.time_sampler.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        if "time_sampler" in state:
            self.time_sampler.load_state_dict(state["time_sampler"])


class AutoencoderTask(TrainedModelTask):
    """The VAE (generator) and its STFT discriminator, updated alternately by two engines."""

    stage = "autoencoder"

    def __init__(self, cfg: ExperimentConfig, device: torch.device, rank: int, world_size: int, on_gpu: bool):
        from sa_train.models.autoencoder.discriminator import MultiScaleSTFTDiscriminator
        from sa_train.models.autoencoder.training_losses import AutoencoderLosses

        self.cfg, self.device, self.rank = cfg, device, rank
        self.precision = resolve_precision(cfg, on_gpu)
        vae = initial_autoencoder(cfg.model, cfg.training.seed).to(device)  # the same on every rank
        losses_cfg = cfg.model.autoencoder.losses
        discriminator = MultiScaleSTFTDiscriminator(
            audio_channels=cfg.model.autoencoder.audio_channels,
            filters=losses_cfg.discriminator_filters,
            fft_sizes=losses_cfg.discriminator_fft_sizes,
        ).to(device)
        self.losses = AutoencoderLosses(losses_cfg, sample_rate=cfg.data.sample_rate).to(device)
        self.generator = make_engine(vae, cfg, cfg.training.optimizer, world_size, on_gpu)
        self.discriminator = make_engine(discriminator, cfg, cfg.training.discriminator_optimizer, world_size, on_gpu)
        self.engines = {"generator": self.generator, "discriminator": self.discriminator}
        self._build_ema()
        self._seed_rank(cfg.training.seed, rank, device)
        self.step = 0
        self._accum: dict[str, list[float]] = {}
        self._last_real: Optional[torch.Tensor] = None

    def exported_engine(self):
        return self.generator

    def micro_step(self, batch: AudioBatch) -> StepResult:
        """One GAN micro-step. Both losses come from the same forward pass and are checked together
        before any engine steps, so a non-finite loss on any rank skips the whole step (neither the
        discriminator nor the generator moves): the discriminator's update and the generator's
        adversarial gradient both see the discriminator as it was before this step."""
        real = batch.audio.to(self.device)
        self._last_real = batch.audio[:2].detach().cpu()
        adversarial = self.step >= self.cfg.training.adversarial_start_step
        discriminator = self.discriminator.module
        with autocast(self.precision):
            out = self.generator(real, generator=self.streams["posterior"])
        fake = out.reconstruction

        # 1. Discriminator loss on detached reconstructions, once adversarial training has started.
        d_loss, d_values = None, {}
        if adversarial:
            with autocast(self.precision):
                d_losses = self.losses.discriminator_losses(real, fake.detach(), discriminator)
            d_loss = d_losses["total"].mean()
            d_values = {f"disc_{k}": v for k, v in d_losses.items()}

        # 2. Generator loss: spectral + KL (+ adversarial and feature matching). The discriminator's
        # weights are frozen meanwhile, so no gradient of this loss reaches them or their ZeRO hooks.
        discriminator.requires_grad_(False)
        try:
            with autocast(self.precision):
                g_losses = self.losses.generator_losses(real, fake, out.kl, discriminator, adversarial,
                                                         step=self.step)
        finally:
            discriminator.requires_grad_(True)
        g_loss = g_losses["total"].mean()
        # One all-reduce: every rank's losses finite (else all skip), and their means over ranks.
        global_means = agree_finite_means({**g_losses, **d_values})
        if global_means is None:
            return StepResult(boundary=False, skipped=True)

        # 3. Backward both, then step both (the discriminator's weights are still those that
        # produced the generator's graph while it backpropagates).
        if d_loss is not None:
            self.discriminator.backward(d_loss)
        self.generator.backward(g_loss)
        if d_loss is not None:
            self.discriminator.step()
        boundary = self.generator.is_gradient_accumulation_boundary()
        self.generator.step()
        for key, value in global_means.items():
            self._accum.setdefault(key, []).append(value)
        if not boundary:
            return StepResult(boundary=False)
        self.step += 1
        metrics = {k: sum(v) / len(v) for k, v in self._accum.items()}
        metrics["loss"] = metrics.pop("total")
        metrics["lr"] = float(self.generator.get_lr()[0])
        metrics["grad_norm"] = float(self.generator.get_global_grad_norm() or 0.0)
        self._accum.clear()
        return StepResult(boundary=True, metrics=metrics)

    def sample_audio(self, weights: dict[str, torch.Tensor]) -> list[tuple[str, "np.ndarray", int]]:
        """Rank 0: the last batch's first clips and their reconstructions by the autoencoder with
        ``weights`` (:meth:`sampling_weights`)."""
        from sa_train.export import load_weights

        if self._last_real is None:
            return []
        vae = build_autoencoder(self.cfg.model).to(self.device).eval()
        load_weights(vae, weights, "the training EMA")
        sr = self.cfg.data.sample_rate
        with torch.no_grad():
            fake = vae(self._last_real.to(self.device)).reconstruction
        out = []
        for i in range(self._last_real.shape[0]):
            out.append((f"{i:02d}_original", self._last_real[i].float().cpu().numpy(), sr))
            out.append((f"{i:02d}_reconstruction", fake[i].float().cpu().numpy(), sr))
        return out

    def extra_state(self) -> dict:
        return {"task_step": self.step}

    def load_extra_state(self, state: dict) -> None:
        self.step = int(state.get("task_step", self.step))
