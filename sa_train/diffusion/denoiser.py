"""Denoiser wrappers: they own the parameterisation, so samplers only ever see ``D(x, sigma) -> x0``.

A denoiser is any callable ``denoiser(x: (B, C, T), sigma: (B,), **kwargs) -> (B, C, T)`` that
returns the estimate of the clean signal for ``x = x0 + sigma * eps`` (sigma space, k-diffusion
convention). :class:`VDenoiser` turns a v-predicting network into one; :class:`CFGDenoiser` adds
classifier-free guidance on top of any denoiser.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import torch

from sa_train.diffusion.schedule import sigma_to_t

Denoiser = Callable[..., torch.Tensor]


def _sigma_per_example(x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.dim() == 0:
        sigma = sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a scalar or (batch,) = ({x.shape[0]},); got shape {tuple(sigma.shape)}")
    return sigma


class VDenoiser:
    """Wrap a v-prediction network ``model_fn(x_t, t, **kwargs) -> v`` as a sigma-space denoiser.

    With sigma_data = 1, ``x = x0 + sigma eps`` scaled by ``c_in = 1 / sqrt(sigma^2 + 1)`` is exactly
    the cosine-schedule point ``alpha x0 + sin(pi t / 2) eps`` at ``t = atan(sigma) 2 / pi``, so the
    network sees the inputs it was trained on; its v is mapped back with
    ``denoised = c_skip x + c_out v``, ``c_skip = 1 / (sigma^2 + 1)``, ``c_out = -sigma / sqrt(sigma^2 + 1)``.
    """

    def __init__(self, model_fn: Callable[..., torch.Tensor]):
        self.model_fn = model_fn

    @staticmethod
    def scalings(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``sigma: (B,)`` -> ``(c_skip, c_out, c_in)``, each ``(B,)``."""
        denom = sigma**2 + 1
        return 1 / denom, -sigma * denom.rsqrt(), denom.rsqrt()

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, **kwargs: Any) -> torch.Tensor:
        """``x: (B, C, T)``, ``sigma: (B,)`` or scalar -> denoised ``(B, C, T)``."""
        sigma = _sigma_per_example(x, sigma)
        c_skip, c_out, c_in = (c[:, None, None] for c in self.scalings(sigma))
        v = self.model_fn(x * c_in, sigma_to_t(sigma), **kwargs)
        return c_skip * x + c_out * v.to(x.dtype)


# ---------------------------------------------------------------------------------------------
# Classifier-free guidance
# ---------------------------------------------------------------------------------------------


def concat_batch(first: Any, second: Any, key: str = "value") -> Any:
    """Concatenate two model inputs of the same structure along the batch dimension.

    Supported: tensors (``torch.cat`` on dim 0); dicts of supported values (by key); dataclass
    instances (every field concatenated, the same class rebuilt with ``dataclasses.replace``, e.g.
    a conditioning dataclass holding cross-attention tokens, their mask and global features);
    lists/tuples (element-wise); ``None`` on both sides; and equal plain values (ints, floats,
    strings, bools), which are passed through unchanged.
    """
    if isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor):
        if first.shape[1:] != second.shape[1:]:
            raise ValueError(
                f"CFG inputs {key!r} differ beyond the batch dimension: {tuple(first.shape)} vs {tuple(second.shape)}; "
                "the conditional and unconditional inputs must have the same shape (e.g. the same token count)"
            )
        return torch.cat([first, second], dim=0)
    if first is None and second is None:
        return None
    if isinstance(first, Mapping) and isinstance(second, Mapping):
        if set(first) != set(second):
            raise ValueError(f"CFG inputs {key!r} have different keys: {sorted(first)} vs {sorted(second)}")
        return {k: concat_batch(first[k], second[k], f"{key}.{k}") for k in first}
    if dataclasses.is_dataclass(first) and not isinstance(first, type) and type(first) is type(second):
        changes = {
            f.name: concat_batch(getattr(first, f.name), getattr(second, f.name), f"{key}.{f.name}")
            for f in dataclasses.fields(first)
            if f.init
        }
        return dataclasses.replace(first, **changes)
    if isinstance(first, (list, tuple)) and type(first) is type(second) and len(first) == len(second):
        return type(first)(concat_batch(a, b, f"{key}[{i}]") for i, (a, b) in enumerate(zip(first, second)))
    if isinstance(first, (int, float, str, bool)) and first == second:
        return first
    raise ValueError(
        f"CFG cannot batch input {key!r}: {type(first).__name__} and {type(second).__name__} are not two "
        "tensors, dicts, dataclasses, lists or equal plain values of the same structure"
    )


class CFGDenoiser:
    """Classifier-free guidance: ``uncond + scale * (cond - uncond)`` from ONE batched forward pass.

    ``cond_kwargs`` and ``uncond_kwargs`` are the keyword inputs of ``denoiser`` for the conditional
    and unconditional branches (same keys; values as accepted by :func:`concat_batch`). Keyword
    arguments given at call time (e.g. from a sampler's ``extra_args``) are shared by both branches.
    Scale 1 runs only the conditional branch, scale 0 only the unconditional one.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        cond_kwargs: Mapping[str, Any],
        uncond_kwargs: Mapping[str, Any],
        scale: float,
    ):
        if set(cond_kwargs) != set(uncond_kwargs):
            raise ValueError(
                f"cond_kwargs keys {sorted(cond_kwargs)} differ from uncond_kwargs keys {sorted(uncond_kwargs)}"
            )
        self.denoiser = denoiser
        self.cond_kwargs = dict(cond_kwargs)
        self.uncond_kwargs = dict(uncond_kwargs)
        self.scale = float(scale)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, **kwargs: Any) -> torch.Tensor:
        """``x: (B, C, T)``, ``sigma: (B,)`` or scalar -> guided denoised ``(B, C, T)``."""
        if self.scale == 1.0:
            return self.denoiser(x, sigma, **self.cond_kwargs, **kwargs)
        if self.scale == 0.0:
            return self.denoiser(x, sigma, **self.uncond_kwargs, **kwargs)
        sigma = _sigma_per_example(x, sigma)
        both = concat_batch(self.cond_kwargs, self.uncond_kwargs, "cond")
        shared = {k: concat_batch(v, v, k) for k, v in kwargs.items()}
        out = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), **both, **shared)
        cond, uncond = out.chunk(2, dim=0)
        return uncond + self.scale * (cond - uncond)
