"""Noise schedules: the cosine v-diffusion schedule for training, sigma schedules for sampling.

Two time axes meet here. Training uses the variance-preserving cosine schedule over t in [0, 1]:
``x_t = alpha(t) x0 + sigma(t) eps`` with ``alpha = cos(pi t / 2)``, ``sigma = sin(pi t / 2)``.
Sampling works in the variance-exploding "sigma space" of k-diffusion, ``x = x0 + sigma eps``,
where the same noise level is ``sigma = tan(pi t / 2)`` (sigma_data = 1). The two are the same
process up to the input scaling applied by :class:`sa_train.diffusion.denoiser.VDenoiser`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from sa_train.diffusion.config import SamplingConfig

TIME_SAMPLING_KINDS = ("uniform", "sobol")

# The largest float32 strictly below 1: scrambled Sobol points near 1 would round up to 1.0.
_BELOW_ONE = 1.0 - 2.0**-24


def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine schedule. ``t: (...)`` in [0, 1] -> ``(alpha, sigma)``, each shaped like ``t``."""
    angle = t * (math.pi / 2)
    return torch.cos(angle), torch.sin(angle)


def t_to_sigma(t: torch.Tensor) -> torch.Tensor:
    """Diffusion time -> sigma-space noise level, ``tan(pi t / 2)`` (infinite at t = 1)."""
    return torch.tan(t * (math.pi / 2))


def sigma_to_t(sigma: torch.Tensor) -> torch.Tensor:
    """Sigma-space noise level -> diffusion time, ``atan(sigma) * 2 / pi`` (the inverse of t_to_sigma)."""
    return torch.atan(sigma) * (2 / math.pi)


# ---------------------------------------------------------------------------------------------
# Training times
# ---------------------------------------------------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind not in TIME_SAMPLING_KINDS:
        raise ValueError(
            f"time sampling kind {kind!r} is unknown; use one of {TIME_SAMPLING_KINDS} "
            "(config key model.diffusion.time_sampling)"
        )


def _sobol_draw(engine: torch.quasirandom.SobolEngine, batch: int) -> torch.Tensor:
    # Draw in float64 (Sobol points have 30 bits) and keep float32 values strictly below 1.
    t = engine.draw(batch, dtype=torch.float64).reshape(batch).to(torch.float32)
    return t.clamp_(max=_BELOW_ONE)


def _seed_from(generator: torch.Generator | None) -> int:
    return int(torch.randint(0, 2**62, (), generator=generator, device=generator.device if generator else "cpu"))


def sample_times(batch: int, generator: torch.Generator | None = None, kind: str = "uniform") -> torch.Tensor:
    """Draw one batch of training times in [0, 1), stateless: ``-> (batch,)`` float32 on the CPU.

    ``"uniform"`` draws i.i.d. from ``generator``; ``"sobol"`` draws the first ``batch`` points of
    a scrambled Sobol sequence whose seed comes from ``generator``, so the batch itself is evenly
    spread. To continue one Sobol sequence across batches use :class:`TimeSampler`.
    """
    _check_kind(kind)
    if batch < 1:
        raise ValueError(f"batch={batch} must be >= 1")
    if kind == "uniform":
        device = generator.device if generator is not None else "cpu"
        return torch.rand(batch, generator=generator, device=device).cpu()
    engine = torch.quasirandom.SobolEngine(dimension=1, scramble=True, seed=_seed_from(generator))
    return _sobol_draw(engine, batch)


class TimeSampler:
    """Stateful source of training times; consecutive batches continue one sequence.

    With ``kind="sobol"`` the times of all batches so far form one scrambled Sobol sequence, so
    t is spread evenly over [0, 1) even across small batches (the reference's choice). Each data-
    parallel worker should use its own seed (e.g. ``seed + rank``) so workers draw different times.
    ``state_dict`` / ``load_state_dict`` make a resumed run continue exactly where it stopped.
    """

    def __init__(self, kind: str = "sobol", seed: int = 0):
        _check_kind(kind)
        self.kind = kind
        self.seed = int(seed)
        self._engine: torch.quasirandom.SobolEngine | None = None
        self._generator: torch.Generator | None = None
        self._reset()

    def _reset(self) -> None:
        if self.kind == "sobol":
            self._engine = torch.quasirandom.SobolEngine(dimension=1, scramble=True, seed=self.seed)
        else:
            self._generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, batch: int) -> torch.Tensor:
        """Next ``batch`` times, ``-> (batch,)`` float32 in [0, 1) on the CPU."""
        if batch < 1:
            raise ValueError(f"batch={batch} must be >= 1")
        if self._engine is not None:
            return _sobol_draw(self._engine, batch)
        return torch.rand(batch, generator=self._generator)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"kind": self.kind, "seed": self.seed}
        if self._engine is not None:
            state["num_generated"] = int(self._engine.num_generated)
        else:
            state["generator_state"] = self._generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state saved by :meth:`state_dict` (kind and seed come from the state)."""
        kind = state.get("kind")
        _check_kind(kind)
        self.kind, self.seed = kind, int(state["seed"])
        self._engine, self._generator = None, None
        self._reset()
        if self._engine is not None:
            # The scrambled sequence is a pure function of the seed: skipping ahead restores it.
            self._engine.fast_forward(int(state["num_generated"]))
        else:
            self._generator.set_state(state["generator_state"])


# ---------------------------------------------------------------------------------------------
# Sampling schedules (sigma space), each n + 1 values from sigma_max down to a final 0
# ---------------------------------------------------------------------------------------------


def _check_schedule_args(n: int, sigma_min: float, sigma_max: float, rho: float) -> None:
    if n < 1:
        raise ValueError(f"number of steps n={n} must be >= 1 (config key model.sampling.steps)")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(
            f"sigma_min={sigma_min} and sigma_max={sigma_max} must satisfy 0 < sigma_min < sigma_max "
            "(config keys model.sampling.sigma_min / sigma_max)"
        )
    if rho <= 0:
        raise ValueError(f"rho={rho} must be > 0 (config key model.sampling.rho)")


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def sigmas_polyexponential(
    n: int, sigma_min: float, sigma_max: float, rho: float = 1.0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Log-sigma falls from log(sigma_max) to log(sigma_min) along ``ramp ** rho`` (rho = 1: geometric).

    Returns ``(n + 1,)`` float32: n decreasing noise levels, then 0.
    """
    _check_schedule_args(n, sigma_min, sigma_max, rho)
    ramp = torch.linspace(1, 0, n, dtype=torch.float64) ** rho
    log_min, log_max = math.log(sigma_min), math.log(sigma_max)
    sigmas = torch.exp(ramp * (log_max - log_min) + log_min)
    return _append_zero(sigmas).to(device=device, dtype=torch.float32)


def sigmas_karras(
    n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Karras et al. (2022): evenly spaced in ``sigma ** (1 / rho)``; larger rho spends more steps at low noise.

    Returns ``(n + 1,)`` float32: n decreasing noise levels, then 0.
    """
    _check_schedule_args(n, sigma_min, sigma_max, rho)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    inv_min, inv_max = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (inv_max + ramp * (inv_min - inv_max)) ** rho
    return _append_zero(sigmas).to(device=device, dtype=torch.float32)


SIGMA_SCHEDULES = {"polyexponential": sigmas_polyexponential, "karras": sigmas_karras}


def get_sigmas(cfg: "SamplingConfig", device: torch.device | str = "cpu") -> torch.Tensor:
    """The sampling schedule a :class:`SamplingConfig` asks for: ``(cfg.steps + 1,)`` ending in 0."""
    if cfg.schedule not in SIGMA_SCHEDULES:
        raise ValueError(
            f"model.sampling.schedule={cfg.schedule!r} is unknown; choose one of {sorted(SIGMA_SCHEDULES)}"
        )
    return SIGMA_SCHEDULES[cfg.schedule](cfg.steps, cfg.sigma_min, cfg.sigma_max, cfg.rho, device=device)
