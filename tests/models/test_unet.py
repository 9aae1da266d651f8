"""The 1D U-Net: shapes, gradients, masking of padded context tokens, gradient checkpointing,
resampling, the length check and the paper's parameter count."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sa_train.config import load_config
from sa_train.models.unet import UNet1D, UNetConfig
from sa_train.models.unet.blocks import Downsample1d, TransformerBlock1d, Upsample1d

TOKENS = 5


def _tiny(**overrides) -> UNetConfig:
    return dataclasses.replace(UNetConfig(), **overrides)


def _batch(cfg: UNetConfig, batch: int = 2, length: int = 32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, length, generator=gen)
    t = torch.rand(batch, generator=gen)
    context = torch.randn(batch, TOKENS, cfg.context_width, generator=gen)
    mask = torch.ones(batch, TOKENS, dtype=torch.bool)
    mask[0, 3:] = False  # the first item has two padded tokens
    return x, t, context, mask


def test_output_has_the_input_shape():
    cfg = _tiny()
    model = UNet1D(cfg)
    x, t, context, mask = _batch(cfg)
    out = model(x, t, context, mask)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = UNet1D(_tiny(), global_cond_width=6)
    x, t, context, mask = _batch(model.cfg)
    out = model(x, t, context, mask, global_cond=torch.randn(2, 6))
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_changing_padded_context_tokens_leaves_the_output_unchanged():
    torch.manual_seed(0)
    model = UNet1D(_tiny(attention_backend="sdpa")).eval()
    x, t, context, mask = _batch(model.cfg)
    before = model(x, t, context, mask)
    changed = context.clone()
    changed[~mask] = 100 * torch.randn(int((~mask).sum()), context.shape[-1])
    after = model(x, t, changed, mask)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    # a real token does change the output, so the test can fail
    changed[0, 0] = torch.randn(context.shape[-1])
    assert not torch.allclose(model(x, t, changed, mask)[0], before[0], atol=1e-4)


def test_context_without_any_real_token_gives_a_finite_output():
    model = UNet1D(_tiny())
    x, t, context, mask = _batch(model.cfg)
    mask[1] = False
    assert torch.isfinite(model(x, t, context, mask)).all()


@pytest.mark.parametrize("backend", ["math", "xformers"])
def test_attention_backends_give_the_same_unet_output(backend):
    torch.manual_seed(0)
    model = UNet1D(_tiny(attention_backend="sdpa"))
    x, t, context, mask = _batch(model.cfg)
    expected = model(x, t, context, mask)
    model.set_attention_backend(backend)
    torch.testing.assert_close(model(x, t, context, mask), expected, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_output_and_grads():
    torch.manual_seed(0)
    plain = UNet1D(_tiny())
    checkpointed = UNet1D(_tiny(gradient_checkpointing=True))
    checkpointed.load_state_dict(plain.state_dict())
    x, t, context, mask = _batch(plain.cfg)
    outputs, grads = [], []
    for model in (plain, checkpointed):
        out = model(x, t, context, mask)
        out.square().mean().backward()
        outputs.append(out.detach())
        grads.append({n: p.grad for n, p in model.named_parameters()})
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-6, rtol=1e-5)
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-4, msg=name)


def test_length_not_divisible_by_the_downsampling_is_a_clear_error():
    model = UNet1D(_tiny(factors=[2, 3]))
    x, t, context, mask = _batch(model.cfg, length=33)
    with pytest.raises(ValueError, match=r"T=33.*downsampling 6"):
        model(x, t, context, mask)


def test_global_conditioning_changes_the_output():
    torch.manual_seed(0)
    model = UNet1D(_tiny(), global_cond_width=4)
    x, t, context, mask = _batch(model.cfg)
    a = model(x, t, context, mask, global_cond=torch.zeros(2, 4))
    b = model(x, t, context, mask, global_cond=torch.ones(2, 4))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="global_cond"):
        model(x, t, context, mask)


@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_resampling_changes_length_by_the_factor(factor):
    x = torch.randn(2, 8, 12)
    down = Downsample1d(8, 16, factor)(x)
    assert down.shape == (2, 16, 12 // factor)
    assert Upsample1d(16, 8, factor)(down).shape == (2, 8, 12 // factor * factor)


def test_width_not_divisible_by_norm_groups_names_the_key():
    with pytest.raises(ValueError, match="norm_groups"):
        UNet1D(_tiny(norm_groups=5))


def test_stable_audio_preset_has_the_papers_parameter_count():
    cfg = load_config("configs/model/stable_audio_1_0.yaml", ["model.autoencoder.pretrained=x"]).model.unet
    with torch.device("meta"):
        model = UNet1D(cfg)
    count = sum(p.numel() for p in model.parameters())
    reference = 906_679_744  # the reference U-Net incl. its 79 x 768 learned CFG null sequence
    assert abs(count - reference) / reference < 0.01
    assert count == reference - 79 * 768  # the same layout exactly; the null sequence lives elsewhere


def test_waveform_preset_runs_on_32768_samples():
    cfg = load_config("configs/model/waveform.yaml", []).model.unet
    torch.manual_seed(0)
    model = UNet1D(cfg).eval()
    x = torch.randn(1, cfg.in_channels, 32768)
    with torch.no_grad():
        out = model(x, torch.rand(1), torch.randn(1, 3, cfg.context_width))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_tiny_default_trains_one_step_and_reduces_the_loss():
    torch.manual_seed(0)
    model = UNet1D(_tiny())
    x, t, context, mask = _batch(model.cfg)
    target = torch.randn_like(x)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        loss = (model(x, t, context, mask) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# --- positional encoding of the self-attention (off by default, as the paper) -----------------


def _constant_in_time(cfg: UNetConfig, length: int = 128) -> torch.Tensor:
    return torch.randn(1, cfg.in_channels, 1, generator=torch.Generator().manual_seed(1)).expand(1, -1, length)


@pytest.mark.parametrize("encoding", ["none", "sinusoidal"])
def test_positional_encoding_makes_self_attention_depend_on_the_frame_position(encoding):
    torch.manual_seed(0)
    block = TransformerBlock1d(32, 4, 16, 2, "math", positional_encoding=encoding)
    x = torch.randn(2, 1, 32).expand(2, 24, 32)  # every frame the same
    out = block(x, torch.randn(2, 3, 16))
    spread = (out - out[:, :1]).abs().amax().item()
    if encoding == "none":
        assert spread < 1e-5, "without positions, attention treats identical frames identically"
    else:
        assert spread > 1e-3


def test_tiny_unet_tells_interior_frames_apart_only_with_positional_encoding():
    """The tiny U-Net's convolutions see the window's borders only near them: frames 50 and 80 of a
    constant input give the same output, so it cannot learn where a requested length ends."""
    outputs = {}
    for encoding in ("none", "sinusoidal"):
        torch.manual_seed(0)
        model = UNet1D(_tiny(positional_encoding=encoding)).eval()
        with torch.no_grad():
            outputs[encoding] = model(_constant_in_time(model.cfg), torch.tensor([0.5]), torch.randn(1, TOKENS, 64))
    torch.testing.assert_close(outputs["none"][..., 50], outputs["none"][..., 80], atol=1e-6, rtol=0)
    assert (outputs["sinusoidal"][..., 50] - outputs["sinusoidal"][..., 80]).abs().max() > 1e-4


def test_positional_encoding_is_off_by_default_and_adds_no_parameters():
    assert UNetConfig().positional_encoding == "none"
    plain, encoded = UNet1D(_tiny()), UNet1D(_tiny(positional_encoding="sinusoidal"))
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes(encoded) == shapes(plain)
    encoded.load_state_dict(plain.state_dict())  # checkpoints load either way
    x, t, context, mask = _batch(plain.cfg)
    assert torch.isfinite(encoded(x, t, context, mask)).all()


@pytest.mark.parametrize("preset", ["stable_audio_1_0", "tiny"])
def test_presets_keep_attention_without_positions(preset):
    cfg = load_config(f"configs/model/{preset}.yaml", ["model.autoencoder.pretrained=x"]).model.unet
    assert cfg.positional_encoding == "none"


def test_tiny_preset_parameter_count_is_unchanged():
    cfg = load_config("configs/model/tiny.yaml", ["model.autoencoder.pretrained=x"]).model.unet
    with torch.device("meta"):
        model = UNet1D(cfg)
    assert sum(p.numel() for p in model.parameters()) == 854_608


def test_unknown_positional_encoding_names_the_key():
    with pytest.raises(ValueError, match="model.unet.positional_encoding='rotary'"):
        UNet1D(_tiny(positional_encoding="rotary"))
