"""The two objectives of the autoencoder's GAN training, per example, so the trainer only reduces
them and steps the generator (VAE) and discriminator optimizers alternately:

    out = vae(real)
    d = losses.discriminator_losses(real, out.reconstruction, disc)
    d["total"].mean().backward(); step the discriminator optimizer
    with the discriminator frozen:
    g = losses.generator_losses(real, out.reconstruction, out.kl, disc, adversarial=step >= warmup)
    g["total"].mean().backward(); step the VAE optimizer
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from sa_train.models.autoencoder.config import AutoencoderConfig, AutoencoderLossConfig
from sa_train.models.autoencoder.discriminator import MultiScaleSTFTDiscriminator
from sa_train.models.autoencoder.losses import (
    StereoSTFTLoss,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
)


def build_discriminator(cfg: AutoencoderConfig) -> MultiScaleSTFTDiscriminator:
    """The multi-scale STFT discriminator configured by ``model.autoencoder.losses``."""
    return MultiScaleSTFTDiscriminator(
        cfg.audio_channels, cfg.losses.discriminator_fft_sizes, cfg.losses.discriminator_filters
    )


class AutoencoderLosses(nn.Module):
    """Generator and discriminator losses of the autoencoder stage (weights from the config).

    All audio is (batch, channels, samples); every returned value has shape (batch,). The
    component entries are unweighted (for logging); ``total`` is the weighted sum to optimise.
    """

    def __init__(self, cfg: AutoencoderLossConfig, sample_rate: int = 44100) -> None:
        super().__init__()
        self.cfg = cfg
        self.stft = StereoSTFTLoss(
            cfg.stft_fft_sizes, sample_rate, cfg.stft_perceptual_weighting, cfg.mid_side_weight, cfg.left_right_weight,
            floor_db=cfg.stft_floor_db,
        )

    def generator_losses(self, real: torch.Tensor, fake: torch.Tensor, kl: torch.Tensor,
                         discriminator: Optional[nn.Module], adversarial: bool,
                         step: int = 0) -> dict[str, torch.Tensor]:
        """Losses of the VAE (the generator). ``adversarial=False`` (e.g. during a warm-up) skips the
        discriminator (which may then be None) and reports zero adversarial and feature-matching
        terms. ``step`` (the optimizer step) only sets the waveform term's decayed weight.

        Gradients also reach the discriminator's parameters unless the trainer freezes them
        (``requires_grad_(False)``) for this step or zeroes them before the discriminator's step.
        """
        cfg = self.cfg
        stft = self.stft(fake, real)
        zeros = torch.zeros_like(stft)
        adv, fm = zeros, zeros
        if adversarial:
            if discriminator is None:
                raise ValueError("generator_losses(adversarial=True) needs a discriminator, got None")
            # Real features are targets only: no graph is kept for them.
            with torch.no_grad():
                _, real_features = discriminator(real)
            fake_logits, fake_features = discriminator(fake)
            adv = hinge_generator_loss(fake_logits).float()
            fm = feature_matching_loss(real_features, fake_features).float()
        kl = kl.float()
        total = stft + cfg.kl_weight * kl + cfg.adversarial_weight * adv + cfg.feature_matching_weight * fm
        losses = {"stft": stft, "kl": kl, "adversarial": adv, "feature_matching": fm}
        if cfg.waveform_l1_weight > 0:
            waveform = (fake.float() - real.float()).abs().flatten(1).mean(dim=1)
            total = total + self.waveform_weight(step) * waveform
            losses["waveform_l1"] = waveform
        return {**losses, "total": total}

    def waveform_weight(self, step: int) -> float:
        """The waveform L1 term's weight at optimizer step ``step``: weight x decay^step."""
        return self.cfg.waveform_l1_weight * self.cfg.waveform_l1_decay ** step

    def discriminator_losses(self, real: torch.Tensor, fake: torch.Tensor,
                             discriminator: nn.Module) -> dict[str, torch.Tensor]:
        """Hinge loss of the discriminator; ``fake`` is detached so the VAE gets no gradient."""
        real_logits, _ = discriminator(real)
        fake_logits, _ = discriminator(fake.detach())
        hinge = hinge_discriminator_loss(real_logits, fake_logits).float()
        return {"hinge": hinge, "total": hinge}
