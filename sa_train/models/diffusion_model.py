"""The trained diffusion model: conditioners (frozen text encoder, timing, null embedding) + U-Net.

One module, so a DeepSpeed engine wraps everything that is trained (U-Net, timing embeddings,
null embedding, text projection) while the frozen text encoder stays outside the optimizer.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from sa_train.config.schema import ModelConfig
from sa_train.models.conditioners.conditioner import Conditioner, Conditioning
from sa_train.models.unet.unet import UNet1D


class DiffusionModel(nn.Module):
    """v-prediction network conditioned on prompts and (seconds_start, seconds_total)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.conditioner = Conditioner(cfg.conditioning, cfg.diffusion, cfg.unet.context_width)
        self.unet = UNet1D(cfg.unet, global_cond_width=self.conditioner.global_cond_width)

    def condition(
        self, prompts: Sequence[str], seconds_start: torch.Tensor, seconds_total: torch.Tensor
    ) -> Conditioning:
        """Cross-attention tokens (text + timing) and the optional global vector for a batch."""
        return self.conditioner(list(prompts), seconds_start, seconds_total)

    def predict_v(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """x: (B, C, F) noisy latents, t: (B,) diffusion time -> v: (B, C, F)."""
        return self.unet(x, t, cond.context, cond.context_mask, cond.global_cond)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        prompts: Sequence[str],
        seconds_start: torch.Tensor,
        seconds_total: torch.Tensor,
        cfg_dropout: float = 0.0,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Training forward: condition, drop the whole conditioning of some examples for CFG, predict v."""
        cond = self.condition(prompts, seconds_start, seconds_total)
        if cfg_dropout > 0:
            cond = self.conditioner.drop_for_cfg(cond, cfg_dropout, generator)
        return self.predict_v(x, t, cond)


def build_autoencoder(cfg: ModelConfig) -> nn.Module:
    from sa_train.models.autoencoder.vae import AutoencoderVAE

    if cfg.autoencoder.kind != "vae":
        raise ValueError("model.autoencoder.kind is 'none': there is no autoencoder to build")
    return AutoencoderVAE(cfg.autoencoder)


def initial_diffusion_model(cfg: ModelConfig, seed: int) -> DiffusionModel:
    """The diffusion model with the initial weights of a run seeded with ``seed`` (``training.seed``):
    torch's global RNG is seeded, then the model built. Every rank builds it this way (identical
    weights), and so does the demo's untrained column."""
    torch.manual_seed(seed)
    return DiffusionModel(cfg)


def initial_autoencoder(cfg: ModelConfig, seed: int) -> nn.Module:
    """The VAE with the initial weights of an autoencoder run seeded with ``seed``, as
    :func:`initial_diffusion_model`."""
    torch.manual_seed(seed)
    return build_autoencoder(cfg)
