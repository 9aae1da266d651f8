"""Sigma schedules, denoiser wrappers, classifier-free guidance and the samplers.

The exact-answer check: for Gaussian data x0 ~ N(mu, s^2) per dimension, the optimal denoiser of
``x = x0 + sigma eps`` is ``D(x, sigma) = (s^2 x + sigma^2 mu) / (s^2 + sigma^2)``, so a correct
sampler must turn noise into samples whose mean and std are mu and s.
"""

import dataclasses
import math
from typing import Optional

import pytest
import torch

import sa_train.config  # noqa: F401  (first: importing a section's config module alone hits an import cycle)
from sa_train.diffusion.config import SAMPLERS as CONFIG_SAMPLER_NAMES
from sa_train.diffusion.config import SamplingConfig
from sa_train.diffusion.denoiser import CFGDenoiser, VDenoiser, concat_batch
from sa_train.diffusion.samplers import SAMPLERS, generate, get_sigmas
from sa_train.diffusion.schedule import alpha_sigma, sigma_to_t, sigmas_karras, sigmas_polyexponential

# Two channels with different statistics: (mu, s) = (0.5, 0.3) and (-1, 2).
MU = torch.tensor([0.5, -1.0]).view(1, 2, 1)
S = torch.tensor([0.3, 2.0]).view(1, 2, 1)
SIGMA_MIN, SIGMA_MAX = 0.01, 500.0


def gaussian_denoiser(x, sigma):
    """The optimal denoiser for x0 ~ N(MU, S^2). ``x: (B, 2, T)``, ``sigma: (B,)``."""
    sig2 = sigma.view(-1, 1, 1).to(x.dtype) ** 2
    mu, s2 = MU.to(x.dtype), S.to(x.dtype) ** 2
    return (s2 * x + sig2 * mu) / (s2 + sig2)


def schedule(kind, steps):
    if kind == "polyexponential":
        return sigmas_polyexponential(steps, SIGMA_MIN, SIGMA_MAX, rho=1.0)
    return sigmas_karras(steps, SIGMA_MIN, SIGMA_MAX, rho=7.0)


def start_noise(batch, frames, sigma_max, generator, dtype=torch.float32):
    """Exact samples of the noisy marginal N(mu, s^2 + sigma_max^2), so only the sampler can err."""
    noise = torch.randn(batch, 2, frames, generator=generator, dtype=dtype)
    return MU.to(dtype) + noise * (S.to(dtype) ** 2 + sigma_max**2).sqrt()


def per_channel(x):
    return x.transpose(0, 1).reshape(2, -1)


# ---------------------------------------------------------------------------------------------
# Sigma schedules
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["polyexponential", "karras"])
@pytest.mark.parametrize("steps", [1, 2, 25])
def test_sigma_schedules_fall_from_sigma_max_to_sigma_min_then_zero(kind, steps):
    sigmas = schedule(kind, steps)
    assert sigmas.shape == (steps + 1,)
    assert sigmas[0].item() == pytest.approx(SIGMA_MAX, rel=1e-6)
    assert sigmas[-1].item() == 0
    assert (sigmas[:-1].diff() < 0).all()
    if steps > 1:
        assert sigmas[-2].item() == pytest.approx(SIGMA_MIN, rel=1e-5)


def test_polyexponential_rho_one_is_geometric_and_karras_takes_growing_log_steps():
    geometric = schedule("polyexponential", 50)[:-1].double().log().diff()
    karras = schedule("karras", 50)[:-1].double().log().diff()
    torch.testing.assert_close(geometric, geometric.mean().expand(49), rtol=1e-4, atol=0)
    assert (karras.diff() < 0).all()  # each log-step more negative than the last


def test_get_sigmas_follows_the_sampling_config():
    cfg = SamplingConfig(steps=7, schedule="karras", sigma_min=0.05, sigma_max=80.0, rho=7.0)
    torch.testing.assert_close(get_sigmas(cfg, "cpu"), sigmas_karras(7, 0.05, 80.0, 7.0))


def test_inconsistent_sigma_range_raises_naming_the_config_keys():
    with pytest.raises(ValueError, match="sigma_min"):
        get_sigmas(SamplingConfig(sigma_min=10.0, sigma_max=1.0), "cpu")
    with pytest.raises(ValueError, match="steps"):
        sigmas_polyexponential(0, 0.1, 1.0)


# ---------------------------------------------------------------------------------------------
# Denoiser wrappers
# ---------------------------------------------------------------------------------------------


def test_v_denoiser_around_an_oracle_v_model_returns_x0_exactly():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 3, 20, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 3, 20, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.001, 0.03, 0.5, 1.0, 20.0, 500.0], dtype=torch.float64)
    seen = {}

    def oracle_v(x_t, t):
        seen.update(x_t=x_t, t=t)
        alpha, sig = (a[:, None, None] for a in alpha_sigma(t))
        return alpha * eps - sig * x0

    denoised = VDenoiser(oracle_v)(x0 + sigma[:, None, None] * eps, sigma)
    torch.testing.assert_close(denoised, x0, atol=1e-9, rtol=0)
    # The network saw exactly the cosine-schedule input it was trained on.
    alpha, sig = (a[:, None, None] for a in alpha_sigma(sigma_to_t(sigma)))
    torch.testing.assert_close(seen["x_t"], alpha * x0 + sig * eps)


def test_v_denoiser_accepts_a_scalar_sigma_and_passes_kwargs():
    calls = []
    model = lambda x_t, t, cond: calls.append((t, cond)) or torch.zeros_like(x_t)
    VDenoiser(model)(torch.ones(3, 2, 4), 1.0, cond="c")
    t, cond = calls[0]
    assert t.shape == (3,) and cond == "c"
    assert t[0].item() == pytest.approx(0.5)


@dataclasses.dataclass
class FakeConditioning:
    tokens: torch.Tensor  # (B, L, D)
    mask: torch.Tensor  # (B, L) bool
    global_cond: Optional[torch.Tensor] = None


class CountingDenoiser:
    """Output depends on the conditioning so guidance is visible; records each call's batch."""

    def __init__(self):
        self.batches = []

    def __call__(self, x, sigma, cond: FakeConditioning, gain=1.0, frame_mask=None):
        self.batches.append(x.shape[0])
        assert cond.tokens.shape[0] == x.shape[0] == sigma.shape[0] == cond.mask.shape[0]
        if frame_mask is not None:
            assert frame_mask.shape[0] == x.shape[0]
        shift = (cond.tokens * cond.mask[..., None]).sum(dim=(1, 2)) * gain
        return x / (1 + sigma.view(-1, 1, 1)) + shift.view(-1, 1, 1)


def _conditions(batch=3):
    g = torch.Generator().manual_seed(1)
    cond = FakeConditioning(torch.randn(batch, 5, 4, generator=g), torch.ones(batch, 5, dtype=torch.bool))
    uncond = FakeConditioning(torch.zeros(batch, 5, 4), torch.zeros(batch, 5, dtype=torch.bool))
    return cond, uncond


def test_cfg_with_scale_one_equals_the_conditional_denoiser_in_one_pass():
    cond, uncond = _conditions()
    inner = CountingDenoiser()
    x, sigma = torch.randn(3, 2, 8), torch.full((3,), 2.0)
    guided = CFGDenoiser(inner, {"cond": cond}, {"cond": uncond}, scale=1.0)(x, sigma)
    torch.testing.assert_close(guided, CountingDenoiser()(x, sigma, cond))
    assert inner.batches == [3]


@pytest.mark.parametrize("scale", [0.0, 3.0, 6.0])
def test_cfg_matches_the_guidance_formula_from_one_batched_forward(scale):
    cond, uncond = _conditions()
    inner = CountingDenoiser()
    x, sigma = torch.randn(3, 2, 8), torch.tensor([0.5, 1.0, 50.0])
    frame_mask = torch.ones(3, 8, dtype=torch.bool)
    guided = CFGDenoiser(inner, {"cond": cond}, {"cond": uncond}, scale)(x, sigma, gain=2.0, frame_mask=frame_mask)
    ref = CountingDenoiser()
    c, u = ref(x, sigma, cond, gain=2.0), ref(x, sigma, uncond, gain=2.0)
    torch.testing.assert_close(guided, u + scale * (c - u))
    assert len(inner.batches) == 1
    assert inner.batches[0] == (3 if scale == 0.0 else 6)


def test_concat_batch_handles_dicts_dataclasses_none_and_plain_values():
    cond, uncond = _conditions(batch=2)
    both = concat_batch({"c": cond, "n": None, "k": 3, "l": [torch.ones(2, 1)]}, {"c": uncond, "n": None, "k": 3, "l": [torch.zeros(2, 1)]})
    assert isinstance(both["c"], FakeConditioning)
    assert both["c"].tokens.shape == (4, 5, 4) and both["c"].global_cond is None
    torch.testing.assert_close(both["c"].tokens[2:], uncond.tokens)
    assert both["n"] is None and both["k"] == 3 and both["l"][0][:, 0].tolist() == [1, 1, 0, 0]


def test_cfg_rejects_inputs_that_cannot_be_batched():
    cond, _ = _conditions()
    with pytest.raises(ValueError, match="keys"):
        CFGDenoiser(CountingDenoiser(), {"cond": cond}, {"other": cond}, 6.0)
    short = FakeConditioning(torch.zeros(3, 2, 4), torch.zeros(3, 2, dtype=torch.bool))
    guided = CFGDenoiser(CountingDenoiser(), {"cond": cond}, {"cond": short}, 6.0)
    with pytest.raises(ValueError, match="cond.cond.tokens"):
        guided(torch.zeros(3, 2, 8), torch.ones(3))


# ---------------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------------


def test_sampler_registry_matches_the_config_choices():
    assert set(SAMPLERS) == set(CONFIG_SAMPLER_NAMES)


# Steps at which each sampler's discretisation error is below the sampling error of 100k draws.
STEPS_FOR_EXACT_ANSWER = {"ddim": 1000, "dpmpp-2m": 100, "dpmpp-2m-sde": 200, "dpmpp-3m-sde": 200}


@pytest.mark.parametrize("kind", ["polyexponential", "karras"])
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_turns_noise_into_the_gaussian_data_distribution(name, kind):
    n = 100_000  # draws per channel
    sigmas = schedule(kind, STEPS_FOR_EXACT_ANSWER[name])
    g = torch.Generator().manual_seed(0)
    x = start_noise(n // 10, 10, sigmas[0].item(), g)
    samples = per_channel(SAMPLERS[name](gaussian_denoiser, x, sigmas, generator=g))
    mu, s = MU.flatten(), S.flatten()
    # Five standard errors of the estimates: the mean's is s / sqrt(n), the std's s / sqrt(2 n).
    assert ((samples.mean(dim=1) - mu).abs() < 5 * s / math.sqrt(n)).all(), samples.mean(dim=1)
    assert ((samples.std(dim=1) - s).abs() < 5 * s / math.sqrt(2 * n)).all(), samples.std(dim=1)


@pytest.mark.parametrize("kind", ["polyexponential", "karras"])
def test_dpmpp_2m_at_25_steps_lands_closer_than_ddim(kind):
    sigmas = schedule(kind, 25)
    x = start_noise(2_000, 10, sigmas[0].item(), torch.Generator().manual_seed(1))
    std_error = {
        name: (per_channel(SAMPLERS[name](gaussian_denoiser, x, sigmas)).std(dim=1) - S.flatten()).abs() / S.flatten()
        for name in ("ddim", "dpmpp-2m")
    }
    assert (std_error["dpmpp-2m"] < std_error["ddim"]).all(), std_error


def _affine_std_error(name, sigmas, **kwargs):
    """Deterministic samplers map noise affinely for a Gaussian: get the output std from two points."""
    sigma_max = sigmas[0].item()
    points = MU.double() + torch.tensor([0.0, 1.0], dtype=torch.float64).view(2, 1, 1) * (S.double() ** 2 + sigma_max**2).sqrt()
    out = SAMPLERS[name](gaussian_denoiser, points, sigmas.double(), **kwargs)
    return ((out[1] - out[0]).flatten() - S.flatten().double()).abs() / S.flatten().double()


@pytest.mark.parametrize("kind", ["polyexponential", "karras"])
def test_third_order_multistep_lands_closer_than_second_order_at_50_steps(kind):
    sigmas = schedule(kind, 50)
    second = _affine_std_error("dpmpp-2m", sigmas)
    third = _affine_std_error("dpmpp-3m-sde", sigmas, eta=0.0)
    assert (third < second).all(), (third, second)


def test_dpmpp_2m_sde_without_noise_is_dpmpp_2m():
    sigmas = schedule("polyexponential", 12)
    x = start_noise(4, 3, sigmas[0].item(), torch.Generator().manual_seed(2))
    torch.testing.assert_close(
        SAMPLERS["dpmpp-2m-sde"](gaussian_denoiser, x, sigmas, eta=0.0),
        SAMPLERS["dpmpp-2m"](gaussian_denoiser, x, sigmas),
    )


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("steps", [1, 2])
def test_one_and_two_step_schedules_return_finite_samples(name, steps):
    sigmas = schedule("polyexponential", steps)
    x = start_noise(8, 4, sigmas[0].item(), torch.Generator().manual_seed(3))
    out = SAMPLERS[name](gaussian_denoiser, x, sigmas, generator=torch.Generator().manual_seed(4))
    assert out.shape == x.shape and torch.isfinite(out).all()
    if steps == 1:  # a single step to sigma 0 is the denoised estimate itself
        torch.testing.assert_close(out, gaussian_denoiser(x, sigmas[:1].expand(8)))


@pytest.mark.parametrize("name", ["dpmpp-2m-sde", "dpmpp-3m-sde"])
def test_sde_samplers_are_reproducible_from_the_generator_seed(name):
    sigmas = schedule("karras", 10)
    x = start_noise(4, 6, sigmas[0].item(), torch.Generator().manual_seed(5))
    run = lambda seed: SAMPLERS[name](gaussian_denoiser, x, sigmas, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(7), run(7))
    assert not torch.allclose(run(7), run(8))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_callback_reports_every_step(name):
    sigmas = schedule("karras", 6)
    seen = []
    x = start_noise(2, 3, sigmas[0].item(), torch.Generator().manual_seed(6))
    SAMPLERS[name](gaussian_denoiser, x, sigmas, callback=seen.append, generator=torch.Generator().manual_seed(0))
    assert [info["i"] for info in seen] == list(range(6))
    assert [info["sigma"] for info in seen] == pytest.approx(sigmas[:-1].tolist())
    assert all(info["denoised"].shape == x.shape and info["x"].shape == x.shape for info in seen)


def test_samplers_pass_extra_args_to_the_denoiser():
    received = []

    def denoiser(x, sigma, scale_by):
        received.append(scale_by)
        return x * 0 + scale_by

    sigmas = schedule("polyexponential", 3)
    out = SAMPLERS["dpmpp-2m"](denoiser, torch.randn(2, 2, 3) * SIGMA_MAX, sigmas, extra_args={"scale_by": 0.25})
    assert received == [0.25] * 3
    torch.testing.assert_close(out, torch.full((2, 2, 3), 0.25))


def test_sigmas_that_do_not_decrease_are_rejected():
    with pytest.raises(ValueError, match="decrease"):
        SAMPLERS["ddim"](gaussian_denoiser, torch.zeros(1, 2, 3), torch.tensor([1.0, 2.0, 0.0]))


# ---------------------------------------------------------------------------------------------
# generate() end to end through the v-parameterisation
# ---------------------------------------------------------------------------------------------


def gaussian_v_model(x_t, t):
    """The optimal v-prediction network for the Gaussian data, derived from the optimal denoiser."""
    alpha, sig = (a.view(-1, 1, 1) for a in alpha_sigma(t))
    sigma = (sig / alpha).flatten()
    x = x_t / alpha
    x0 = gaussian_denoiser(x, sigma)
    eps = (x - x0) / sigma.view(-1, 1, 1)
    return alpha * eps - sig * x0


def test_generate_with_a_v_model_reproduces_the_gaussian_data():
    n = 20_000
    cfg = SamplingConfig(sampler="dpmpp-3m-sde", steps=100, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, seed=3)
    samples = per_channel(generate(VDenoiser(gaussian_v_model), (n // 10, 2, 10), cfg))
    mu, s = MU.flatten(), S.flatten()
    # generate() starts from N(0, sigma_max^2), which shifts the mean by mu * s / sigma_max (tiny).
    assert ((samples.mean(dim=1) - mu).abs() < 5 * s / math.sqrt(n) + (mu * s / SIGMA_MAX).abs()).all()
    assert ((samples.std(dim=1) - s).abs() < 5 * s / math.sqrt(2 * n)).all()


def test_generate_is_reproducible_from_the_config_seed_and_uses_the_configured_sampler():
    calls = []

    def denoiser(x, sigma):
        calls.append(sigma[0].item())
        return gaussian_denoiser(x, sigma)

    cfg = SamplingConfig(sampler="dpmpp-2m-sde", steps=4, sigma_min=0.1, sigma_max=50.0, seed=11)
    a = generate(denoiser, (2, 2, 5), cfg)
    b = generate(denoiser, (2, 2, 5), cfg)
    c = generate(denoiser, (2, 2, 5), dataclasses.replace(cfg, seed=12))
    assert a.shape == (2, 2, 5) and torch.equal(a, b) and not torch.equal(a, c)
    assert calls[:4] == pytest.approx(get_sigmas(cfg, "cpu")[:-1].tolist())


def test_generate_rejects_an_unknown_sampler():
    with pytest.raises(ValueError, match="model.sampling.sampler"):
        generate(gaussian_denoiser, (1, 2, 3), SamplingConfig(sampler="euler"))
