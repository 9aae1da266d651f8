"""The exponential moving average of model weights."""

import pytest
import torch
from torch import nn

from sa_train.diffusion.ema import EMA


class Toy(nn.Module):
    """A trainable layer, a frozen layer and a norm with running statistics."""

    def __init__(self):
        super().__init__()
        self.trained = nn.Linear(3, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.norm = nn.BatchNorm1d(2)


def _set(model, value):
    with torch.no_grad():
        for p in model.trained.parameters():
            p.fill_(value)
        model.norm.running_mean.fill_(value)


def _weight_after_copy(ema, model):
    ema.copy_to(model)
    return model.trained.weight[0, 0].item()


def test_decay_zero_copies_the_current_weights():
    model = Toy()
    ema = EMA(model, decay=0.0)
    _set(model, 3.0)
    model.norm.num_batches_tracked.fill_(5)
    ema.update(model, step=1)
    fresh = Toy()
    ema.copy_to(fresh)
    for name, tensor in model.trained.state_dict().items():
        torch.testing.assert_close(fresh.trained.state_dict()[name], tensor)
    torch.testing.assert_close(fresh.norm.running_mean, model.norm.running_mean)
    assert fresh.norm.num_batches_tracked.item() == 5


def test_update_follows_the_decay_formula():
    decay = 0.9
    model = Toy()
    _set(model, 1.0)
    ema = EMA(model, decay=decay)
    expected = 1.0
    for step, value in enumerate([2.0, -4.0, 10.0], start=1):
        _set(model, value)
        ema.update(model, step)
        expected = decay * expected + (1 - decay) * value
    assert _weight_after_copy(ema, model) == pytest.approx(expected, rel=1e-6)
    assert model.norm.running_mean[0].item() == pytest.approx(expected, rel=1e-6)  # float buffers averaged too


def test_updates_before_start_step_copy_the_weights():
    model = Toy()
    _set(model, 0.0)
    ema = EMA(model, decay=0.5, start_step=10)
    _set(model, 4.0)
    ema.update(model, step=9)
    assert _weight_after_copy(ema, model) == pytest.approx(4.0)
    _set(model, 8.0)
    ema.update(model, step=10)
    assert _weight_after_copy(ema, model) == pytest.approx(6.0)


def test_frozen_parameters_are_not_tracked():
    model = Toy()
    ema = EMA(model, decay=0.5)
    assert "trained.weight" in ema.shadow and "norm.running_mean" in ema.shadow
    assert not any(name.startswith("frozen.") for name in ema.shadow)


def test_shadow_is_float32_for_a_low_precision_model_and_copies_back_in_its_dtype():
    model = Toy().to(torch.bfloat16)
    _set(model, 1.0)
    ema = EMA(model, decay=0.999)
    assert ema.shadow["trained.weight"].dtype == torch.float32
    _set(model, 2.0)
    ema.update(model, 1)
    # 1.001 is below bf16's resolution near 1 (1/128): only an fp32 shadow keeps the small update.
    assert ema.shadow["trained.weight"][0, 0].item() == pytest.approx(1.001, rel=1e-6)
    ema.copy_to(model)
    assert model.trained.weight.dtype == torch.bfloat16


def test_state_dict_round_trip_restores_the_average():
    model = Toy()
    ema = EMA(model, decay=0.7)
    for step, value in enumerate([1.0, 5.0, -2.0]):
        _set(model, value)
        ema.update(model, step)
    state = ema.state_dict()

    restored = EMA(Toy(), decay=0.7)
    restored.load_state_dict(state)
    assert restored.num_updates == 3
    a, b = Toy(), Toy()
    ema.copy_to(a)
    restored.copy_to(b)
    for name, tensor in a.state_dict().items():
        if not name.startswith("frozen."):
            torch.testing.assert_close(b.state_dict()[name], tensor)
    # The saved state is a snapshot: later updates do not change it.
    _set(model, 100.0)
    ema.update(model, 4)
    assert state["shadow"]["trained.weight"][0, 0].item() != ema.shadow["trained.weight"][0, 0].item()


def test_loading_a_state_from_a_different_model_raises_naming_the_keys():
    ema = EMA(Toy(), decay=0.5)
    other = EMA(nn.Sequential(nn.Linear(3, 2)), decay=0.5).state_dict()
    with pytest.raises(ValueError, match="missing"):
        ema.load_state_dict(other)


def test_update_with_a_different_model_raises():
    ema = EMA(Toy(), decay=0.5)
    with pytest.raises(ValueError, match="lacks"):
        ema.update(nn.Sequential(nn.Linear(3, 2)), step=1)


@pytest.mark.parametrize("decay", [-0.1, 1.5])
def test_decay_outside_the_unit_interval_is_rejected(decay):
    with pytest.raises(ValueError, match="decay"):
        EMA(Toy(), decay=decay)
