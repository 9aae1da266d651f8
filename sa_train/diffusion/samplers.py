"""Samplers: short pure functions over a sigma-space denoiser, after k-diffusion's design.

Every sampler has the signature ``sample_x(denoiser, x, sigmas, extra_args=None, callback=None,
generator=None, ...) -> x0`` where

- ``denoiser(x: (B, ...), sigma: (B,), **extra_args) -> denoised (B, ...)`` estimates the clean
  signal of ``x = x0 + sigma * eps`` (see :mod:`sa_train.diffusion.denoiser`);
- ``x`` is the starting point, pure noise already scaled by ``sigmas[0]``;
- ``sigmas: (n + 1,)`` decreases to a final 0 (:mod:`sa_train.diffusion.schedule`); a step to
  sigma 0 returns the denoised estimate, so one- and two-step schedules work;
- ``callback({"i", "sigma", "sigma_next", "denoised", "x"})`` is called once per step, after the
  denoiser ran and before ``x`` is updated;
- ``generator`` drives the fresh noise of the SDE samplers. They draw plain Gaussian increments
  (not a Brownian tree), so a run is reproducible from the generator's seed but the same seed at
  a different step count gives unrelated noise.

Step sizes are computed in float64 Python scalars; only tensors of ``x``'s dtype touch the data.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from sa_train.diffusion.schedule import get_sigmas

if TYPE_CHECKING:  # a runtime import would cycle through sa_train.config's schema
    from sa_train.diffusion.config import SamplingConfig

Denoiser = Callable[..., torch.Tensor]
Callback = Callable[[dict[str, Any]], None]

__all__ = [
    "SAMPLERS",
    "generate",
    "get_sigmas",
    "sample_ddim",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_3m_sde",
]


def _prepare(sigmas: torch.Tensor | Sequence[float]) -> list[float]:
    values = [float(s) for s in (sigmas.tolist() if isinstance(sigmas, torch.Tensor) else sigmas)]
    if len(values) < 2:
        raise ValueError(f"sigmas needs at least 2 values (one step); got {len(values)}")
    if any(b >= a for a, b in zip(values, values[1:])) or values[-1] < 0:
        raise ValueError(f"sigmas must decrease strictly to a final value >= 0; got {values}")
    return values


def _denoise(denoiser: Denoiser, x: torch.Tensor, sigma: float, extra_args: dict[str, Any]) -> torch.Tensor:
    return denoiser(x, x.new_full((x.shape[0],), sigma), **extra_args)


def _gaussian(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # Drawn on the generator's own device so a CPU generator can drive a GPU run reproducibly.
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def _report(
    callback: Callback | None, i: int, sigma: float, sigma_next: float, x: torch.Tensor, denoised: torch.Tensor
) -> None:
    if callback is not None:
        callback({"i": i, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised, "x": x})


@torch.no_grad()
def sample_ddim(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Deterministic DDIM (eta 0), which in sigma space is an Euler step of the probability-flow ODE:
    keep the predicted noise ``(x - denoised) / sigma`` and rescale it to ``sigma_next``.
    ``generator`` is unused (accepted for a uniform signature)."""
    extra_args = extra_args or {}
    values = _prepare(sigmas)
    for i, (sigma, sigma_next) in enumerate(zip(values, values[1:])):
        denoised = _denoise(denoiser, x, sigma, extra_args)
        _report(callback, i, sigma, sigma_next, x, denoised)
        x = denoised + (x - denoised) * (sigma_next / sigma)
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al., 2022): second-order multistep in lambda = -log(sigma), reusing the
    previous step's denoised estimate; the first and last steps are first order (== DDIM).
    ``generator`` is unused."""
    extra_args = extra_args or {}
    values = _prepare(sigmas)
    old_denoised, h_last = None, None
    for i, (sigma, sigma_next) in enumerate(zip(values, values[1:])):
        denoised = _denoise(denoiser, x, sigma, extra_args)
        _report(callback, i, sigma, sigma_next, x, denoised)
        if sigma_next == 0:
            x = denoised
            break
        h = math.log(sigma / sigma_next)
        estimate = denoised
        if old_denoised is not None:
            r = h_last / h
            estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigma_next / sigma) * x - math.expm1(-h) * estimate
        old_denoised, h_last = denoised, h
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE, midpoint variant: each step removes a fraction ``1 - exp(-2 eta h)`` of the
    noise variance deterministically and adds it back as fresh noise from ``generator``.
    ``eta = 0`` is the ODE solver; ``s_noise`` scales the added noise."""
    extra_args = extra_args or {}
    values = _prepare(sigmas)
    old_denoised, h_last = None, None
    for i, (sigma, sigma_next) in enumerate(zip(values, values[1:])):
        denoised = _denoise(denoiser, x, sigma, extra_args)
        _report(callback, i, sigma, sigma_next, x, denoised)
        if sigma_next == 0:
            x = denoised
            break
        h = math.log(sigma / sigma_next)
        eta_h = eta * h
        data_weight = -math.expm1(-h - eta_h)
        x = (sigma_next / sigma) * math.exp(-eta_h) * x + data_weight * denoised
        if old_denoised is not None:
            r = h_last / h
            x = x + (0.5 * data_weight / r) * (denoised - old_denoised)
        if eta > 0:
            x = x + _gaussian(x, generator) * (sigma_next * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise)
        old_denoised, h_last = denoised, h
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver++(3M) SDE: third-order multistep over the last three denoised estimates (first and
    second order while fewer are known), with fresh noise from ``generator`` as in the 2M SDE."""
    extra_args = extra_args or {}
    values = _prepare(sigmas)
    denoised_1 = denoised_2 = None
    h_1 = h_2 = None
    for i, (sigma, sigma_next) in enumerate(zip(values, values[1:])):
        denoised = _denoise(denoiser, x, sigma, extra_args)
        _report(callback, i, sigma, sigma_next, x, denoised)
        if sigma_next == 0:
            x = denoised
            break
        h = math.log(sigma / sigma_next)
        h_eta = h * (eta + 1)
        x = math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised
        phi_2 = math.expm1(-h_eta) / h_eta + 1
        if h_2 is not None:
            r0, r1 = h_1 / h, h_2 / h
            d1_0 = (denoised - denoised_1) / r0
            d1_1 = (denoised_1 - denoised_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi_3 = phi_2 / h_eta - 0.5
            x = x + phi_2 * d1 - phi_3 * d2
        elif h_1 is not None:
            x = x + phi_2 * (denoised - denoised_1) / (h_1 / h)
        if eta > 0:
            x = x + _gaussian(x, generator) * (sigma_next * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise)
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddim": sample_ddim,
    "dpmpp-2m": sample_dpmpp_2m,
    "dpmpp-2m-sde": sample_dpmpp_2m_sde,
    "dpmpp-3m-sde": sample_dpmpp_3m_sde,
}


def generate(
    denoiser: Denoiser,
    shape: Sequence[int],
    cfg: "SamplingConfig",
    extra_args: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw noise of ``shape`` (e.g. ``(batch, latent_channels, frames)``), run ``cfg.sampler`` over
    ``get_sigmas(cfg)`` and return the sample, ``shape``.

    Guidance is not applied here: wrap the denoiser in :class:`CFGDenoiser` with ``cfg.cfg_scale``.
    Without ``generator`` a CPU generator seeded with ``cfg.seed`` drives both the initial noise and
    the SDE noise. ``device`` defaults to the generator's device.
    """
    if cfg.sampler not in SAMPLERS:
        raise ValueError(f"model.sampling.sampler={cfg.sampler!r} is unknown; choose one of {sorted(SAMPLERS)}")
    if generator is None:
        generator = torch.Generator().manual_seed(cfg.seed)
    device = torch.device(device) if device is not None else generator.device
    sigmas = get_sigmas(cfg, device=device)
    noise = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype).to(device)
    x = noise * sigmas[0].to(dtype)
    return SAMPLERS[cfg.sampler](
        denoiser, x, sigmas, extra_args=extra_args, callback=callback, generator=generator
    )
