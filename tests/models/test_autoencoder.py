"""Behaviour of the DAC-style VAE: shapes, bottleneck, errors, chunked decoding, parameter counts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sa_train.config import load_config
from sa_train.models.autoencoder.blocks import DecoderBlock, EncoderBlock, Snake
from sa_train.models.autoencoder.config import AutoencoderConfig
from sa_train.models.autoencoder.vae import AutoencoderVAE, VAEBottleneck

torch.set_num_threads(1)

PRESETS = Path(__file__).resolve().parents[2] / "configs" / "model"


def tiny_config(**overrides) -> AutoencoderConfig:
    cfg = AutoencoderConfig()
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def small_config() -> AutoencoderConfig:
    """Smaller than the default, with short strides, so tests on a single core stay fast."""
    return tiny_config(strides=[2, 4], encoder_width=4, decoder_width=16, latent_channels=8)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_vae_round_trip_keeps_shape_and_compresses_time():
    torch.manual_seed(0)
    vae = AutoencoderVAE(tiny_config())
    audio = torch.randn(2, 2, 2 * 1024) * 0.3
    out = vae(audio)
    assert vae.downsampling == 1024 and vae.latent_channels == 16
    assert out.reconstruction.shape == audio.shape
    assert out.latents.shape == (2, 16, 2)
    assert out.kl.shape == (2,)
    assert vae.encode(audio).shape == (2, 16, 2)
    assert vae.decode(out.latents).shape == audio.shape


def test_final_tanh_bounds_the_output():
    torch.manual_seed(0)
    vae = AutoencoderVAE(small_config())
    loud = vae.decode(torch.randn(1, 8, 16) * 100)
    assert loud.abs().max() <= 1.0


@pytest.mark.parametrize("stride", [2, 3, 4, 5, 8])
def test_strided_blocks_change_length_by_exactly_the_stride(stride):
    x = torch.randn(1, 4, stride * 7)
    down = EncoderBlock(4, 8, stride)(x)
    assert down.shape == (1, 8, 7)
    assert DecoderBlock(8, 4, stride)(down).shape == (1, 4, stride * 7)


def test_stride_of_one_is_rejected_with_the_key_named():
    with pytest.raises(ValueError, match="model.autoencoder.strides"):
        AutoencoderVAE(tiny_config(strides=[1, 4]))


def test_snake_is_identity_plus_a_nonnegative_periodic_term():
    snake = Snake(3)
    x = torch.linspace(-5, 5, 30).repeat(1, 3, 1)
    y = snake(x)
    assert y.shape == x.shape
    assert torch.all(y >= x - 1e-6)
    assert torch.allclose(y, x + torch.sin(x) ** 2, atol=1e-6)


@pytest.mark.parametrize("kind", ["snake", "snake_beta"])
def test_snake_without_a_graph_gives_the_same_bits_and_leaves_its_input_alone(kind):
    """Encoding and decoding run the Snakes in place; that must not change a value or the input."""
    from sa_train.models.autoencoder.blocks import SnakeBeta

    torch.manual_seed(0)
    snake = Snake(4) if kind == "snake" else SnakeBeta(4)
    with torch.no_grad():
        for p in snake.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(2, 4, 300) * 3
    kept = x.clone()
    with_graph = snake(x)
    assert with_graph.requires_grad
    with torch.no_grad():
        in_place = snake(x)
    assert torch.equal(in_place, with_graph.detach())
    assert torch.equal(x, kept)
    with_graph.sum().backward()  # the training path still reaches the parameters
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in snake.parameters())


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    vae = AutoencoderVAE(small_config())
    out = vae(torch.randn(2, 2, 64) * 0.3)
    (out.reconstruction.square().mean() + out.kl.mean()).backward()
    missing = [name for name, p in vae.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient for {missing}"
    assert all(p.grad.abs().sum() > 0 for p in vae.parameters())


def test_kl_matches_the_closed_form_for_a_known_mean_and_std():
    mean, std = 0.5, 2.0
    # Invert std = softplus(scale) + 1e-4.
    scale = math.log(math.expm1(std - 1e-4))
    channels, frames = 4, 6
    params = torch.cat([torch.full((3, channels, frames), mean), torch.full((3, channels, frames), scale)], dim=1)
    _, kl = VAEBottleneck()(params, sample=False)
    expected = channels * 0.5 * (mean**2 + std**2 - math.log(std**2) - 1)
    assert kl.shape == (3,)
    assert torch.allclose(kl, torch.full((3,), expected), rtol=1e-5)


def test_kl_is_near_zero_for_the_standard_normal_posterior():
    scale = math.log(math.expm1(1 - 1e-4))
    params = torch.cat([torch.zeros(2, 4, 5), torch.full((2, 4, 5), scale)], dim=1)
    _, kl = VAEBottleneck()(params)
    assert kl.abs().max() < 1e-5


def test_deterministic_encoding_returns_the_mean_and_sampling_varies():
    torch.manual_seed(0)
    vae = AutoencoderVAE(small_config())
    audio = torch.randn(1, 2, 64) * 0.3
    first, second = vae.encode(audio), vae.encode(audio)
    assert torch.equal(first, second)
    mean = vae.encoder(audio).chunk(2, dim=1)[0]
    assert torch.equal(first, mean)
    sampled_a, sampled_b = vae.encode(audio, sample=True), vae.encode(audio, sample=True)
    assert not torch.allclose(sampled_a, sampled_b)


def test_forward_samples_in_training_and_uses_the_mean_in_eval():
    torch.manual_seed(0)
    vae = AutoencoderVAE(small_config())
    audio = torch.randn(1, 2, 64) * 0.3
    vae.eval()
    assert torch.equal(vae(audio).latents, vae.encode(audio))
    vae.train()
    assert not torch.allclose(vae(audio).latents, vae.encode(audio))


def test_length_not_a_multiple_of_the_downsampling_names_valid_lengths():
    vae = AutoencoderVAE(tiny_config())
    with pytest.raises(ValueError, match=r"3000.*1024.*2048 or 3072"):
        vae.encode(torch.zeros(1, 2, 3000))
    with pytest.raises(ValueError, match=r"1024"):
        vae.encode(torch.zeros(1, 2, 100))


def test_wrong_channel_count_is_a_clear_error():
    vae = AutoencoderVAE(tiny_config())
    with pytest.raises(ValueError, match="audio_channels=2"):
        vae.encode(torch.zeros(1, 1, 1024))
    with pytest.raises(ValueError, match="latent_channels=16"):
        vae.decode(torch.zeros(1, 3, 4))


def test_kind_none_cannot_build_a_vae():
    with pytest.raises(ValueError, match="kind=vae"):
        AutoencoderVAE(tiny_config(kind="none"))


def test_chunked_decode_equals_full_decode():
    torch.manual_seed(0)
    vae = AutoencoderVAE(tiny_config()).eval()
    latents = torch.randn(1, 16, 90)
    with torch.no_grad():
        full = vae.decode(latents)
        chunked = vae.decode_chunked(latents, chunk_frames=32)
        no_context = vae.decode_chunked(latents, chunk_frames=32, overlap_frames=0)
    assert chunked.shape == full.shape
    assert torch.allclose(chunked, full, atol=1e-5)
    # Without context the chunk seams differ: the overlap is what makes them agree.
    assert not torch.allclose(no_context, full, atol=1e-3)


def test_chunked_decode_without_chunking_is_the_plain_decode():
    torch.manual_seed(0)
    vae = AutoencoderVAE(small_config()).eval()
    latents = torch.randn(1, 8, 10)
    with torch.no_grad():
        assert torch.equal(vae.decode_chunked(latents, chunk_frames=0), vae.decode(latents))
        assert torch.equal(vae.decode_chunked(latents, chunk_frames=64), vae.decode(latents))


def test_stable_audio_preset_has_the_papers_size():
    cfg = load_config(PRESETS / "stable_audio_1_0.yaml", ["training.stage=autoencoder"]).model.autoencoder
    with torch.device("meta"):
        vae = AutoencoderVAE(cfg)
    assert vae.downsampling == 1024 and vae.latent_channels == 64
    encoder, decoder, total = count(vae.encoder), count(vae.decoder), count(vae)
    # Reference counts: encoder + projection 89.6M, decoder 43.9M, total 133.4M.
    assert abs(encoder - 89.6e6) / 89.6e6 < 0.03
    assert abs(decoder - 43.9e6) / 43.9e6 < 0.03
    assert abs(total - 133.4e6) / 133.4e6 < 0.03


def test_tiny_default_is_small_enough_for_a_cpu():
    with torch.device("meta"):
        vae = AutoencoderVAE(AutoencoderConfig())
    assert vae.downsampling == 1024 and vae.latent_channels == 16
    assert 100_000 < count(vae) < 2_000_000


@pytest.mark.parametrize("layout", ["dac", "oobleck"])
def test_initial_posterior_std_sets_the_posterior_spread_at_initialisation(layout):
    torch.manual_seed(0)
    audio = torch.randn(2, 2, 4096) * 0.1
    default = AutoencoderVAE(AutoencoderConfig(layout=layout))
    narrow = AutoencoderVAE(AutoencoderConfig(layout=layout, initial_posterior_std=0.02))
    spread = lambda vae: torch.nn.functional.softplus(vae.encoder(audio).chunk(2, dim=1)[1]) + 1e-4  # noqa: E731
    assert spread(default).mean() > 0.3  # PyTorch's init: noise far above a new encoder's outputs
    assert spread(narrow).mean().item() == pytest.approx(0.02, rel=0.05)  # the weights add a little per frame
    assert spread(narrow).max() < 0.04
