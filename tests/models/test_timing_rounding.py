"""One rounding rule for timing at training and generation: a request of L seconds is conditioned
on the embedding that training used for a file of L seconds (seconds_total up, seconds_start down)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile
import torch

import sa_train.config  # noqa: F401  (loads the config schema first)
from sa_train.config import ExperimentConfig
from sa_train.data.config import DataConfig
from sa_train.data.decode import Example, read_window
from sa_train.models.conditioners.config import TimingConfig
from sa_train.models.conditioners.timing import TimingEmbedding, conditioning_seconds

WIDTH = 8
RATE = 8000


def _seconds_total_training_gives(tmp_path, seconds: float) -> int:
    """seconds_total that the data pipeline gives a file of ``seconds`` (written and decoded)."""
    path = tmp_path / f"{seconds}.wav"
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(round(seconds * RATE)) / RATE)
    soundfile.write(str(path), tone.astype(np.float32), RATE)
    example = read_window(str(path), DataConfig(sample_rate=RATE, min_seconds=0.0), np.random.default_rng(0))
    assert isinstance(example, Example), example
    return example.seconds_total


def _total_token(timing: TimingEmbedding, seconds: float) -> torch.Tensor:
    tokens, _ = timing(torch.tensor([0.0]), torch.tensor([seconds]))
    return tokens[0, 1]


@pytest.mark.parametrize("seconds", [0.4, 1.0, 2.5, 3.0, 9.99])
def test_request_of_l_seconds_selects_the_embedding_training_used_for_a_file_of_l_seconds(tmp_path, seconds):
    torch.manual_seed(0)
    timing = TimingEmbedding(TimingConfig(kind="per_second"), WIDTH)
    trained_index = _seconds_total_training_gives(tmp_path, seconds)
    assert torch.equal(_total_token(timing, seconds), timing.total.table.weight[trained_index])


def test_request_of_2_5_seconds_selects_the_embedding_of_3_seconds():
    timing = TimingEmbedding(TimingConfig(kind="per_second"), WIDTH)
    assert torch.equal(_total_token(timing, 2.5), timing.total.table.weight[3])


def test_fourier_timing_follows_the_same_rule(tmp_path):
    torch.manual_seed(0)
    timing = TimingEmbedding(TimingConfig(kind="fourier", fourier_features=16), WIDTH)
    trained = _seconds_total_training_gives(tmp_path, 2.5)
    torch.testing.assert_close(_total_token(timing, 2.5), _total_token(timing, float(trained)))
    assert not torch.allclose(_total_token(timing, 2.5), _total_token(timing, 2.0))


def test_seconds_start_rounds_down_like_the_crop_offset():
    start, total = conditioning_seconds(torch.tensor([0.0, 12.5, 12.0, 511.9]), torch.tensor([1.0, 2.0, 2.01, 95.1]))
    assert start.tolist() == [0.0, 12.0, 12.0, 511.0]
    assert total.tolist() == [1.0, 2.0, 3.0, 96.0]


def test_float_noise_does_not_move_a_request_to_another_second():
    start, total = conditioning_seconds(torch.tensor([2.9999999, 3.0000001]), torch.tensor([2.0000001, 1.9999999]))
    assert start.tolist() == [3.0, 3.0]
    assert total.tolist() == [2.0, 2.0]


def test_generation_conditions_a_fractional_request_like_training(monkeypatch):
    """Through the Generator: asking for 2.5 s conditions on the seconds_total embedding of 3."""
    from sa_train.generation import Generator
    from sa_train.models.diffusion_model import DiffusionModel

    cfg = ExperimentConfig()
    cfg.model.sampling = dataclasses.replace(cfg.model.sampling, sampler="ddim", steps=1)
    torch.manual_seed(0)
    model = DiffusionModel(cfg.model)
    seen = []
    condition = model.condition
    monkeypatch.setattr(model, "condition", lambda *args: seen.append(condition(*args)) or seen[-1])
    Generator(model, None, cfg).generate(["a dog barks"], [2.5])
    total_token = seen[0].context[0, -1]  # timing tokens follow the text: [start, total]
    torch.testing.assert_close(total_token, model.conditioner.timing.total.table.weight[3].to(total_token.dtype))
