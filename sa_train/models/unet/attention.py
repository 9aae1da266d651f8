"""Scaled dot-product attention with key padding masks, behind one function and three backends.

    math      the plain reference: softmax(q k^T / sqrt(D)) v, computed in float32
    sdpa      torch.nn.functional.scaled_dot_product_attention (flash / memory-efficient kernels)
    xformers  xformers.ops.memory_efficient_attention (the paper's memory-efficient attention; CUDA only)
    auto      xformers on CUDA when it is installed, else sdpa

All backends give the same result: padded keys get exactly zero weight, and a batch item whose keys
are all padding gets a zero output (not NaN). Such an item happens with classifier-free guidance or
empty prompts; rather than let each kernel divide 0 by 0 (some give NaN, some zero, and backward
through NaN poisons the whole batch), its keys are unmasked for the kernel and its output zeroed.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from sa_train.models.unet.config import ATTENTION_BACKENDS

logger = logging.getLogger(__name__)

# xformers wants a tensor bias whose rows start on 8-element boundaries (16 bytes in fp16/bf16).
_XFORMERS_BIAS_ALIGNMENT = 8

_xformers_ops = None
_xformers_checked = False
_fallback_warned = False


def _load_xformers():
    """The xformers.ops module, or None when it is not installed (imported once, lazily)."""
    global _xformers_ops, _xformers_checked
    if not _xformers_checked:
        _xformers_checked = True
        try:
            import xformers.ops as xops  # noqa: PLC0415 - optional dependency, GPU only
        except Exception as err:  # ImportError, or a build that does not match this torch
            logger.debug("xformers is not usable (%s); attention uses torch sdpa", err)
        else:
            _xformers_ops = xops
    return _xformers_ops


def xformers_available() -> bool:
    """Whether xformers can be imported in this process."""
    return _load_xformers() is not None


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that will actually run for tensors on ``device``.

    ``xformers`` requested where it cannot run (CPU, or not installed) falls back to ``sdpa``,
    with one warning per process: the results are the same, only memory and speed differ.
    """
    global _fallback_warned
    if backend not in ATTENTION_BACKENDS:
        allowed = ", ".join(repr(b) for b in ATTENTION_BACKENDS)
        raise ValueError(f"attention backend {backend!r} is unknown (model.unet.attention_backend); use one of {allowed}")
    usable_xformers = device.type == "cuda" and xformers_available()
    if backend == "auto":
        return "xformers" if usable_xformers else "sdpa"
    if backend == "xformers" and not usable_xformers:
        if not _fallback_warned:
            _fallback_warned = True
            reason = "not on CUDA" if device.type != "cuda" else "xformers is not installed"
            logger.warning(
                "model.unet.attention_backend=xformers but tensors are %s (%s); using torch sdpa instead "
                "(same results). Install xformers on GPU machines to use it.",
                device.type,
                reason,
            )
        return "sdpa"
    return backend


def _math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    scores = torch.einsum("bhqd,bhkd->bhqk", q.float(), k.float()) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    weights = scores.softmax(dim=-1)
    return torch.einsum("bhqk,bhkd->bhqd", weights, v.float()).to(v.dtype)


def _sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    # A boolean attn_mask is True where a key takes part; None lets torch pick the flash kernel.
    attn_mask = mask[:, None, None, :] if mask is not None else None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


def _xformers_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    xops = _load_xformers()
    assert xops is not None, "resolve_backend only picks xformers when it is importable"
    batch, heads, queries, _ = q.shape
    bias = None
    if mask is not None:
        keys = mask.shape[-1]
        # Build the additive bias in a buffer padded to the alignment, then slice: the slice keeps
        # aligned strides. expand() adds the head and query dims with stride 0 (no memory).
        padded = -(-keys // _XFORMERS_BIAS_ALIGNMENT) * _XFORMERS_BIAS_ALIGNMENT
        storage = torch.zeros(batch, 1, 1, padded, dtype=q.dtype, device=q.device)
        storage[..., :keys].masked_fill_(~mask[:, None, None, :], float("-inf"))
        bias = storage[..., :keys].expand(batch, heads, queries, keys)
    # xformers' layout is (batch, length, heads, head_width).
    out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias)
    return out.transpose(1, 2)


_BACKENDS: dict[str, Callable[..., torch.Tensor]] = {
    "math": _math_attention,
    "sdpa": _sdpa_attention,
    "xformers": _xformers_attention,
}


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Multi-head attention of queries over keys.

    Args:
        q: (batch, heads, queries, head_width)
        k, v: (batch, heads, keys, head_width)
        key_padding_mask: (batch, keys) bool, True = a real token; padded keys get zero weight.
        backend: 'auto', 'xformers', 'sdpa' or 'math' (see the module docstring).

    Returns:
        (batch, heads, queries, head_width); zeros for a batch item without any real key.
    """
    run = _BACKENDS[resolve_backend(backend, q.device)]
    if key_padding_mask is None:
        return run(q, k, v, None)
    if key_padding_mask.shape != (k.shape[0], k.shape[2]) or key_padding_mask.dtype != torch.bool:
        raise ValueError(
            f"key_padding_mask must be bool with shape (batch, keys) = {(k.shape[0], k.shape[2])}, "
            f"got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
        )
    has_keys = key_padding_mask.any(dim=-1)  # (batch,)
    safe_mask = key_padding_mask | ~has_keys[:, None]
    out = run(q, k, v, safe_mask)
    return out * has_keys[:, None, None, None].to(out.dtype)
