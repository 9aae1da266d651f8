"""The attention function: backends agree with the plain reference, padding gets no weight, the
all-padding case gives zeros, and an xformers request on CPU falls back to sdpa with one warning."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from sa_train.models.unet import attention as attention_module
from sa_train.models.unet.attention import attention, resolve_backend

BATCH, HEADS, QUERIES, KEYS, HEAD_WIDTH = 3, 2, 7, 6, 8


def _inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(BATCH, HEADS, QUERIES, HEAD_WIDTH, generator=gen)
    k = torch.randn(BATCH, HEADS, KEYS, HEAD_WIDTH, generator=gen)
    v = torch.randn(BATCH, HEADS, KEYS, HEAD_WIDTH, generator=gen)
    # item 0: some padding at the end, item 1: no padding, item 2: every key is padding
    mask = torch.tensor(
        [[True, True, True, False, True, False], [True] * KEYS, [False] * KEYS], dtype=torch.bool
    )
    return q, k, v, mask


def _naive(q, k, v, mask):
    """Attention written out per item and head, looping over real keys only."""
    out = torch.zeros_like(q, dtype=torch.float64)
    for b in range(q.shape[0]):
        real = mask[b].nonzero().flatten()
        if len(real) == 0:
            continue
        for h in range(q.shape[1]):
            scores = q[b, h].double() @ k[b, h, real].double().T / math.sqrt(q.shape[-1])
            out[b, h] = scores.softmax(-1) @ v[b, h, real].double()
    return out.float()


def test_math_backend_matches_a_naive_per_item_loop():
    q, k, v, mask = _inputs()
    torch.testing.assert_close(attention(q, k, v, mask, backend="math"), _naive(q, k, v, mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["sdpa", "auto"])
def test_backends_agree_with_math_with_masks(backend):
    q, k, v, mask = _inputs(seed=1)
    expected = attention(q, k, v, mask, backend="math")
    torch.testing.assert_close(attention(q, k, v, mask, backend=backend), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_backends_agree_without_mask(backend):
    q, k, v, _ = _inputs(seed=2)
    expected = _naive(q, k, v, torch.ones(BATCH, KEYS, dtype=torch.bool))
    torch.testing.assert_close(attention(q, k, v, None, backend=backend), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_item_with_only_padding_gets_zeros_and_finite_grads(backend):
    q, k, v, mask = _inputs(seed=3)
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    out = attention(q, k, v, mask, backend=backend)
    assert torch.isfinite(out).all()
    assert torch.equal(out[2], torch.zeros_like(out[2]))
    out.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_padded_keys_get_zero_weight(backend):
    q, k, v, mask = _inputs(seed=4)
    before = attention(q, k, v, mask, backend=backend)
    k2, v2 = k.clone(), v.clone()
    padded = ~mask[:, None, :, None].expand_as(k)
    k2[padded] = 1e3 * torch.randn(int(padded.sum()))
    v2[padded] = 1e3 * torch.randn(int(padded.sum()))
    after = attention(q, k2, v2, mask, backend=backend)
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    # and the values at real positions do matter: the test can fail
    v3 = v.clone()
    v3[0, :, 0] = torch.randn(HEADS, HEAD_WIDTH)
    assert not torch.allclose(attention(q, k, v3, mask, backend=backend)[0], before[0])


def test_xformers_request_on_cpu_falls_back_to_sdpa_with_one_warning(caplog, monkeypatch):
    monkeypatch.setattr(attention_module, "_fallback_warned", False)
    q, k, v, mask = _inputs(seed=5)
    with caplog.at_level(logging.WARNING, logger=attention_module.__name__):
        first = attention(q, k, v, mask, backend="xformers")
        second = attention(q, k, v, mask, backend="xformers")
    warnings = [r for r in caplog.records if "xformers" in r.getMessage()]
    assert len(warnings) == 1
    assert "sdpa" in warnings[0].getMessage()
    expected = attention(q, k, v, mask, backend="sdpa")
    torch.testing.assert_close(first, expected, atol=0, rtol=0)
    torch.testing.assert_close(second, expected, atol=0, rtol=0)


def test_auto_picks_sdpa_on_cpu():
    assert resolve_backend("auto", torch.device("cpu")) == "sdpa"


def test_unknown_backend_names_the_key():
    with pytest.raises(ValueError, match="attention_backend"):
        resolve_backend("flash3", torch.device("cpu"))


def test_wrong_mask_shape_is_a_clear_error():
    q, k, v, mask = _inputs()
    with pytest.raises(ValueError, match="key_padding_mask"):
        attention(q, k, v, mask[:, :3], backend="sdpa")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["sdpa", "xformers"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_backends_agree_with_math(backend, dtype):
    if backend == "xformers" and not attention_module.xformers_available():
        pytest.skip("xformers is not installed")
    q, k, v, mask = (t.cuda() for t in _inputs(seed=6))
    q, k, v = (t.to(dtype) for t in (q, k, v))
    expected = attention(q, k, v, mask, backend="math").float()
    got = attention(q, k, v, mask, backend=backend).float()
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got, expected, atol=tol, rtol=tol)
