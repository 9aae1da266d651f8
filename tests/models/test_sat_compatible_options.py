"""The model options that reproduce stable-audio-tools (SAT) exactly: each one's SAT choice does what
SAT does, and the defaults keep sa_train's behaviour. (The comparisons against SAT's own modules
are in tests/interop.)"""

from __future__ import annotations

import pytest
import torch

from sa_train.config import load_config
from sa_train.models.autoencoder.blocks import SnakeBeta
from sa_train.models.autoencoder.vae import AutoencoderVAE
from sa_train.models.unet.blocks import Downsample1d, MultiHeadAttention


def config(*overrides: str):
    """The default config (as an autoencoder stage, which needs no pretrained VAE) with ``overrides``."""
    return load_config(None, ["training.stage=autoencoder", *overrides])


def test_sat_downsampling_windows_start_one_frame_later_for_factor_four():
    centred, sat = Downsample1d(1, 1, 4), Downsample1d(1, 1, 4, padding="sat")
    sat.load_state_dict(centred.state_dict())
    x = torch.randn(1, 1, 32)
    assert centred(x).shape == sat(x).shape == (1, 1, 8)
    advanced = torch.nn.functional.pad(x[..., 1:], (0, 1))  # x[n + 1]: what the centred conv must see
    assert torch.allclose(sat(x)[..., 1:], centred(advanced)[..., 1:], atol=1e-6)
    assert not torch.allclose(sat(x), centred(x))


@pytest.mark.parametrize("factor", [1, 2])
def test_sat_downsampling_equals_centred_for_factors_up_to_two(factor):
    centred, sat = Downsample1d(3, 5, factor), Downsample1d(3, 5, factor, padding="sat")
    sat.load_state_dict(centred.state_dict())
    x = torch.randn(2, 3, 16)
    assert torch.equal(centred(x), sat(x))


def test_zero_kv_masking_leaves_padded_tokens_a_share_of_the_softmax():
    torch.manual_seed(0)
    exclude = MultiHeadAttention(8, 2, context_width=4, backend="math")
    zero_kv = MultiHeadAttention(8, 2, context_width=4, backend="math", context_mask="zero_kv")
    zero_kv.load_state_dict(exclude.state_dict())
    x, context = torch.randn(1, 3, 8), torch.randn(1, 5, 4)
    mask = torch.tensor([[True, True, False, False, False]])
    padded = exclude(x, context, mask)
    assert torch.allclose(padded, exclude(x, context[:, :2]), atol=1e-6)  # 'exclude': as if absent
    # 'zero_kv': the padded keys score 0 and their values are 0; a different, SAT's, result.
    assert not torch.allclose(zero_kv(x, context, mask), padded, atol=1e-4)
    assert torch.equal(zero_kv(x, context, None), exclude(x, context, None))


def test_null_conditioning_keeps_the_prompts_mask_only_with_null_mask_prompt():
    from sa_train.models.conditioners.conditioner import Conditioner

    mask = torch.tensor([[True] * 3 + [False] * 3 + [True, True]])
    for choice, expected in (("all", torch.ones_like(mask)), ("prompt", mask)):
        cfg = config("model.conditioning.text_encoder.max_length=6", f"model.diffusion.null_mask={choice}")
        conditioner = Conditioner(cfg.model.conditioning, cfg.model.diffusion, cfg.model.unet.context_width)
        assert torch.equal(conditioner.null_conditioning(1, mask).context_mask, expected)
        assert conditioner.null_conditioning(1).context_mask.all()


def test_snake_beta_has_log_scale_frequency_and_amplitude():
    snake = SnakeBeta(2)
    with torch.no_grad():
        snake.alpha.copy_(torch.tensor([0.0, 1.0]))
        snake.beta.copy_(torch.tensor([0.0, -1.0]))
    x = torch.linspace(-2, 2, 7).expand(1, 2, 7)
    alpha, beta = torch.tensor([1.0, torch.e])[:, None], torch.tensor([1.0, 1 / torch.e])[:, None]
    assert torch.allclose(snake(x)[0], x[0] + torch.sin(alpha * x[0]) ** 2 / beta, atol=1e-6)


def test_oobleck_layout_goes_straight_to_the_posterior_and_keeps_widths_by_multiplier():
    cfg = config(
        "model.autoencoder.layout=oobleck", "model.autoencoder.channel_multipliers=[1,1,2]",
        "model.autoencoder.strides=[2,4]", "model.autoencoder.encoder_width=4", "model.autoencoder.decoder_width=4",
        "model.autoencoder.snake_beta=true", "model.autoencoder.latent_channels=3", "model.unet.in_channels=3",
        "model.autoencoder.final_tanh=false",
    ).model.autoencoder
    vae = AutoencoderVAE(cfg)
    assert isinstance(vae.encoder.projection, torch.nn.Identity)
    assert vae.encoder.output_conv.parametrizations.weight.original1.shape == (6, 8, 3)
    assert vae.decoder.output_conv.bias is None
    assert [b.block[-1].parametrizations.weight.original1.shape[0] for b in vae.encoder.blocks] == [4, 8]
    audio = torch.randn(1, 2, 64)
    assert vae.decode(vae.encode(audio)).shape == audio.shape


def test_channel_multipliers_of_the_wrong_length_are_refused_naming_the_key():
    cfg = config("model.autoencoder.channel_multipliers=[1,2]").model.autoencoder
    with pytest.raises(ValueError, match="model.autoencoder.channel_multipliers"):
        AutoencoderVAE(cfg)
