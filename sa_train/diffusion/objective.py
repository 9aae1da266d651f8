"""The v-objective of the paper: predict ``v = alpha eps - sigma x0`` at a noisy point ``x_t``,
and which latent frames its loss counts."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from sa_train.diffusion.config import DiffusionConfig
from sa_train.diffusion.schedule import alpha_sigma

# model_fn(x_t: (B, C, T), t: (B,), **model_kwargs) -> v: (B, C, T)
VModel = Callable[..., torch.Tensor]


def noise_and_target(
    x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cosine-schedule forward process and its v target.

    ``x0, noise: (B, C, T)``, ``t: (B,)`` -> ``(x_t, v)``, both ``(B, C, T)``.
    """
    alpha, sigma = alpha_sigma(t.to(x0.dtype))
    alpha, sigma = alpha[:, None, None], sigma[:, None, None]
    return alpha * x0 + sigma * noise, alpha * noise - sigma * x0


def _check_shapes(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor | None) -> None:
    if x0.dim() != 3:
        raise ValueError(f"x0 must be (batch, channels, frames); got shape {tuple(x0.shape)}")
    if noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} differs from x0 shape {tuple(x0.shape)}")
    if t.shape != (x0.shape[0],):
        raise ValueError(f"t must be (batch,) = ({x0.shape[0]},); got shape {tuple(t.shape)}")
    if mask is not None and mask.shape != (x0.shape[0], x0.shape[2]):
        raise ValueError(
            f"mask must be (batch, frames) = ({x0.shape[0]}, {x0.shape[2]}); got shape {tuple(mask.shape)}"
        )


def v_objective_loss(
    model_fn: VModel,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    mask: torch.Tensor | None = None,
    **model_kwargs: Any,
) -> torch.Tensor:
    """Per-example v-objective MSE.

    Args:
        model_fn: ``model_fn(x_t, t, **model_kwargs) -> v_pred``, shapes ``(B, C, T), (B,) -> (B, C, T)``.
        x0: clean latents ``(B, C, T)``.
        t: diffusion times in [0, 1], ``(B,)``.
        noise: standard Gaussian noise ``(B, C, T)``.
        mask: ``(B, T)`` bool, True on real (not padded) frames; None counts every frame.

    Returns:
        ``(B,)`` float32: squared error averaged over channels and the unmasked frames. An example
        whose mask is all False contributes 0 (not NaN), so padding-only crops are harmless.
    """
    _check_shapes(x0, t, noise, mask)
    x_t, v = noise_and_target(x0, t, noise)
    v_pred = model_fn(x_t, t, **model_kwargs)
    if v_pred.shape != v.shape:
        raise ValueError(f"model_fn output has shape {tuple(v_pred.shape)}; expected {tuple(v.shape)} like x0")
    # Reduce in float32 even when the model ran in bf16/fp16: small errors matter late in training.
    per_frame = (v_pred.float() - v.float()).pow(2).mean(dim=1)  # (B, T)
    if mask is None:
        return per_frame.mean(dim=1)
    mask = mask.to(torch.bool)
    # masked_fill rather than multiply: a non-finite prediction on a padded frame must not leak in.
    total = per_frame.masked_fill(~mask, 0.0).sum(dim=1)
    return total / mask.sum(dim=1).clamp(min=1).to(total.dtype)


def loss_mask_for(
    mask: torch.Tensor, cfg: DiffusionConfig, generator: Optional[torch.Generator] = None
) -> Optional[torch.Tensor]:
    """The frame mask that :func:`v_objective_loss` should use for a batch, by ``model.diffusion``.

    Padded frames hold the silence after a short file; the model must learn to produce it after
    seconds_total, so by default (``mask_padding_in_loss`` false) they count and this returns None.
    With masking on, each example keeps its mask except with probability ``padding_mask_dropout``,
    one uniform per example drawn from ``generator`` (the caller's per-rank stream, never the global
    RNG), where its row becomes all True and its padding counts again.

    Args:
        mask: (batch, frames) bool, True on real (not padded) frames.
        cfg: the ``model.diffusion`` config.
        generator: required when ``padding_mask_dropout`` > 0; draws on its own device.

    Returns:
        None (count every frame) or a (batch, frames) bool mask on ``mask``'s device.
    """
    if not cfg.mask_padding_in_loss:
        return None
    if mask.dim() != 2:
        raise ValueError(f"mask must be (batch, frames); got shape {tuple(mask.shape)}")
    mask = mask.to(torch.bool)
    p = float(cfg.padding_mask_dropout)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"model.diffusion.padding_mask_dropout={p} must lie in [0, 1]")
    if p == 0.0:
        return mask
    if generator is None:
        raise ValueError(
            "model.diffusion.padding_mask_dropout > 0 needs a torch.Generator (the rank's own stream) "
            "to draw which examples drop their mask; got None"
        )
    drop = torch.rand(mask.shape[0], generator=generator, device=generator.device) < p  # (batch,)
    return mask | drop.to(mask.device)[:, None]
