"""Which latent frames the v-objective counts: padding (the silence after a short file) is learned
by default, masking is an option, and the mask can be dropped per example from the caller's RNG."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import sa_train.config  # noqa: F401  (loads the config schema first)
from sa_train.config.fields import ConfigError
from sa_train.diffusion.config import DiffusionConfig, check_diffusion
from sa_train.diffusion.objective import loss_mask_for, v_objective_loss

BATCH, CHANNELS, FRAMES, REAL = 4, 3, 12, 5  # frames REAL.. of every example are padding


def _padded_batch():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(BATCH, CHANNELS, FRAMES, generator=g)
    x0[:, :, REAL:] = 0.0  # silence, as the data pipeline pads
    noise = torch.randn(BATCH, CHANNELS, FRAMES, generator=g)
    t = torch.rand(BATCH, generator=g)
    mask = torch.zeros(BATCH, FRAMES, dtype=torch.bool)
    mask[:, :REAL] = True
    return x0, noise, t, mask


def _frame_gradients(cfg: DiffusionConfig, generator=None) -> torch.Tensor:
    """(batch, frames) gradient magnitude of a per-frame free prediction, as the training step
    computes the loss: mask chosen by loss_mask_for, then v_objective_loss, mean over the batch."""
    x0, noise, t, mask = _padded_batch()
    prediction = torch.zeros(BATCH, CHANNELS, FRAMES, requires_grad=True)
    loss = v_objective_loss(lambda x_t, times: prediction, x0, t, noise, loss_mask_for(mask, cfg, generator))
    loss.mean().backward()
    return prediction.grad.abs().sum(dim=1)


def _masking(dropout: float = 0.0) -> DiffusionConfig:
    return dataclasses.replace(DiffusionConfig(), mask_padding_in_loss=True, padding_mask_dropout=dropout)


def test_padded_frames_receive_gradient_by_default():
    assert DiffusionConfig().mask_padding_in_loss is False
    grads = _frame_gradients(DiffusionConfig())
    assert (grads[:, REAL:] > 0).all(), "the silence after seconds_total must be learned"
    assert (grads[:, :REAL] > 0).all()


def test_default_counts_every_frame_like_an_unmasked_loss():
    _, _, _, mask = _padded_batch()
    assert loss_mask_for(mask, DiffusionConfig()) is None


def test_masking_option_gives_padded_frames_zero_gradient():
    grads = _frame_gradients(_masking())
    assert (grads[:, REAL:] == 0).all()
    assert (grads[:, :REAL] > 0).all()


def test_mask_dropout_probability_one_includes_padding():
    grads = _frame_gradients(_masking(dropout=1.0), torch.Generator().manual_seed(0))
    assert (grads[:, REAL:] > 0).all()
    x0, noise, t, mask = _padded_batch()
    zero_model = lambda x_t, times: torch.zeros_like(x_t)
    dropped = v_objective_loss(zero_model, x0, t, noise, loss_mask_for(mask, _masking(1.0), torch.Generator()))
    torch.testing.assert_close(dropped, v_objective_loss(zero_model, x0, t, noise))


def test_mask_dropout_is_per_example_and_reproducible_from_the_callers_generator():
    mask = torch.zeros(256, FRAMES, dtype=torch.bool)
    mask[:, :REAL] = True
    cfg = _masking(dropout=0.5)
    global_state = torch.random.get_rng_state()
    first = loss_mask_for(mask, cfg, torch.Generator().manual_seed(7))
    again = loss_mask_for(mask, cfg, torch.Generator().manual_seed(7))
    other = loss_mask_for(mask, cfg, torch.Generator().manual_seed(8))
    assert torch.equal(torch.random.get_rng_state(), global_state), "the global RNG must not be used"
    assert torch.equal(first, again) and not torch.equal(first, other)
    dropped = first.all(dim=1)  # a dropped example counts every frame, a kept one only its real frames
    assert torch.equal(first[~dropped], mask[~dropped])
    assert 0.35 < dropped.float().mean() < 0.65


def test_mask_dropout_without_a_generator_is_a_clear_error():
    _, _, _, mask = _padded_batch()
    with pytest.raises(ValueError, match="padding_mask_dropout.*Generator"):
        loss_mask_for(mask, _masking(dropout=0.2), None)


def test_mask_dropout_without_masking_is_a_config_error_naming_both_keys():
    cfg = dataclasses.replace(DiffusionConfig(), padding_mask_dropout=0.2)
    with pytest.raises(ConfigError, match="padding_mask_dropout=0.2.*mask_padding_in_loss"):
        check_diffusion(cfg)
    check_diffusion(_masking(dropout=0.2))
    check_diffusion(DiffusionConfig())
