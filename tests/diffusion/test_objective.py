"""The v-objective, the cosine schedule and the training-time samplers."""

import math

import pytest
import torch
from torch import nn

from sa_train.diffusion.objective import noise_and_target, v_objective_loss
from sa_train.diffusion.schedule import TimeSampler, alpha_sigma, sample_times, sigma_to_t, t_to_sigma


def _batch(b=4, c=3, t=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(b, c, t, generator=g, dtype=torch.float64)
    noise = torch.randn(b, c, t, generator=g, dtype=torch.float64)
    times = torch.rand(b, generator=g, dtype=torch.float64)
    return x0, noise, times


def _oracle(x0, noise):
    """A 'network' that knows x0 and the noise and returns the true v for the time it is given."""

    def model_fn(x_t, t):
        alpha, sigma = (a[:, None, None] for a in alpha_sigma(t))
        return alpha * noise - sigma * x0

    return model_fn


# ---------------------------------------------------------------------------------------------
# Schedule conversions
# ---------------------------------------------------------------------------------------------


def test_cosine_schedule_preserves_variance_and_matches_sigma_space():
    t = torch.linspace(0, 0.99, 50, dtype=torch.float64)
    alpha, sigma = alpha_sigma(t)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(t))
    torch.testing.assert_close(sigma / alpha, t_to_sigma(t))
    assert alpha[0] == 1 and sigma[0] == 0


def test_sigma_to_t_inverts_t_to_sigma():
    t = torch.linspace(0, 0.999, 101, dtype=torch.float64)
    torch.testing.assert_close(sigma_to_t(t_to_sigma(t)), t)
    assert sigma_to_t(torch.tensor(float("inf"))).item() == pytest.approx(1.0)
    assert sigma_to_t(torch.tensor(1.0)).item() == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# The v-objective
# ---------------------------------------------------------------------------------------------


def test_loss_is_zero_for_a_model_that_returns_the_true_v():
    x0, noise, t = _batch()
    loss = v_objective_loss(_oracle(x0, noise), x0, t, noise)
    assert loss.shape == (4,)
    torch.testing.assert_close(loss, torch.zeros(4, dtype=loss.dtype), atol=1e-12, rtol=0)


def test_model_sees_the_cosine_noisy_input_and_the_times():
    x0, noise, t = _batch()
    seen = {}

    def model_fn(x_t, times, **kwargs):
        seen.update(x_t=x_t, t=times, kwargs=kwargs)
        return torch.zeros_like(x_t)

    v_objective_loss(model_fn, x0, t, noise, cond="text")
    alpha, sigma = math.cos(math.pi * t[1] / 2), math.sin(math.pi * t[1] / 2)
    torch.testing.assert_close(seen["x_t"][1], alpha * x0[1] + sigma * noise[1])
    torch.testing.assert_close(seen["t"], t)
    assert seen["kwargs"] == {"cond": "text"}


def test_loss_of_a_zero_model_is_the_mean_square_of_the_target_at_the_ends():
    x0, noise, _ = _batch(b=2)
    zero_model = lambda x_t, t: torch.zeros_like(x_t)
    # t = 0: the target v is the noise itself; t = 1: it is -x0.
    loss = v_objective_loss(zero_model, x0, torch.tensor([0.0, 1.0], dtype=torch.float64), noise)
    assert loss[0].item() == pytest.approx(noise[0].pow(2).mean().item(), rel=1e-6)
    assert loss[1].item() == pytest.approx(x0[1].pow(2).mean().item(), rel=1e-6)


def test_noise_and_target_reconstruct_x0_and_noise():
    x0, noise, t = _batch()
    x_t, v = noise_and_target(x0, t, noise)
    alpha, sigma = (a[:, None, None] for a in alpha_sigma(t))
    torch.testing.assert_close(alpha * x_t - sigma * v, x0)
    torch.testing.assert_close(sigma * x_t + alpha * v, noise)


def test_masked_frames_are_excluded_from_the_loss():
    x0, noise, t = _batch(b=3, t=10)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[0, 6:] = False
    mask[2, 1:] = False
    oracle = _oracle(x0, noise)

    def wrong_on_padding(x_t, times):
        v = oracle(x_t, times).clone()
        v[0, :, 6:] = float("nan")  # garbage on padded frames must not leak into the loss
        v[2, :, 1:] = 1e6
        return v

    loss = v_objective_loss(wrong_on_padding, x0, t, noise, mask=mask)
    torch.testing.assert_close(loss, torch.zeros(3, dtype=loss.dtype), atol=1e-12, rtol=0)
    # Without the mask the same predictions are penalised.
    unmasked = v_objective_loss(lambda a, b: wrong_on_padding(a, b).nan_to_num(0.0), x0, t, noise)
    assert (unmasked[[0, 2]] > 0).all()


def test_masked_loss_averages_over_real_frames_only():
    x0, noise, t = _batch(b=1, c=2, t=8)
    mask = torch.zeros(1, 8, dtype=torch.bool)
    mask[0, :2] = True
    zero_model = lambda x_t, times: torch.zeros_like(x_t)
    _, v = noise_and_target(x0, t, noise)
    loss = v_objective_loss(zero_model, x0, t, noise, mask=mask)
    assert loss.item() == pytest.approx(v[0, :, :2].pow(2).mean().item(), rel=1e-6)


def test_example_with_all_frames_masked_has_zero_loss_not_nan():
    x0, noise, t = _batch(b=2)
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1] = False
    loss = v_objective_loss(lambda x_t, times: torch.zeros_like(x_t), x0, t, noise, mask=mask)
    assert torch.isfinite(loss).all()
    assert loss[1] == 0 and loss[0] > 0


def test_loss_is_per_example_and_independent_across_the_batch():
    x0, noise, t = _batch(b=3)
    model = nn.Conv1d(3, 3, 3, padding=1).double()
    fn = lambda x_t, times: model(x_t)
    base = v_objective_loss(fn, x0, t, noise)
    x0_changed = x0.clone()
    x0_changed[2] += 5.0
    changed = v_objective_loss(fn, x0_changed, t, noise)
    assert base.shape == (3,)
    torch.testing.assert_close(changed[:2], base[:2])
    assert changed[2] != base[2]


def test_loss_gradient_reaches_the_model():
    x0, noise, t = _batch()
    model = nn.Conv1d(3, 3, 3, padding=1).double()
    v_objective_loss(lambda x_t, times: model(x_t), x0, t, noise).mean().backward()
    assert model.weight.grad is not None and model.weight.grad.abs().sum() > 0


def test_low_precision_model_output_gives_float32_loss():
    x0, noise, t = (a.float() for a in _batch())
    loss = v_objective_loss(lambda x_t, times: x_t.to(torch.bfloat16), x0, t, noise)
    assert loss.dtype == torch.float32


@pytest.mark.parametrize(
    "change, named",
    [("noise_shape", "noise"), ("t_shape", "t must be"), ("mask_shape", "mask"), ("output_shape", "model_fn output")],
)
def test_mismatched_shapes_raise_value_error_naming_the_input(change, named):
    x0, noise, t = _batch()
    mask = None
    model = lambda x_t, times: torch.zeros_like(x_t)
    if change == "noise_shape":
        noise = noise[:, :, :8]
    elif change == "t_shape":
        t = t[:2]
    elif change == "mask_shape":
        mask = torch.ones(4, 8, dtype=torch.bool)
    else:
        model = lambda x_t, times: torch.zeros(4, 3, 8)
    with pytest.raises(ValueError, match=named):
        v_objective_loss(model, x0, t, noise, mask=mask)


# ---------------------------------------------------------------------------------------------
# Training times
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["uniform", "sobol"])
def test_training_times_lie_in_the_unit_interval(kind):
    times = TimeSampler(kind, seed=3)(4096)
    assert times.shape == (4096,) and times.dtype == torch.float32
    assert (times >= 0).all() and (times < 1).all()
    once = sample_times(257, torch.Generator().manual_seed(1), kind)
    assert once.shape == (257,) and (once >= 0).all() and (once < 1).all()


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_sobol_times_fill_every_eighth_of_the_interval_evenly_across_batches(seed):
    sampler = TimeSampler("sobol", seed=seed)
    times = torch.cat([sampler(5) for _ in range(13)])[:64]  # batches that do not divide 64
    counts = torch.histc(times, bins=8, min=0, max=1)
    assert counts.tolist() == [8.0] * 8
    # i.i.d. uniform draws would almost never be this even: the quasi-random sequence is.
    uniform = TimeSampler("uniform", seed=seed)(64)
    assert torch.histc(uniform, bins=8, min=0, max=1).tolist() != [8.0] * 8


def test_sobol_times_differ_between_seeds():
    assert not torch.equal(TimeSampler("sobol", 0)(16), TimeSampler("sobol", 1)(16))


@pytest.mark.parametrize("kind", ["uniform", "sobol"])
def test_time_sampler_resumed_from_state_dict_continues_the_same_sequence(kind):
    original = TimeSampler(kind, seed=11)
    for _ in range(3):
        original(7)
    state = original.state_dict()
    expected = torch.cat([original(7), original(3)])

    resumed = TimeSampler("uniform" if kind == "sobol" else "sobol", seed=99)  # state decides
    resumed.load_state_dict(state)
    torch.testing.assert_close(torch.cat([resumed(7), resumed(3)]), expected, atol=0, rtol=0)


def test_sample_times_is_reproducible_from_the_generator():
    for kind in ("uniform", "sobol"):
        a = sample_times(32, torch.Generator().manual_seed(5), kind)
        b = sample_times(32, torch.Generator().manual_seed(5), kind)
        assert torch.equal(a, b)


def test_unknown_time_sampling_kind_raises_with_the_config_key():
    with pytest.raises(ValueError, match="time_sampling"):
        TimeSampler("halton")
    with pytest.raises(ValueError, match="time_sampling"):
        sample_times(4, None, "halton")
