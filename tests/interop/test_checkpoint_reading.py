"""Reading stable-audio-tools checkpoint files: Lightning unwrapping, EMA, and no unpickling of code."""

from __future__ import annotations

import argparse

import pytest
import torch

from sa_train.interop.checkpoint import read_sat_checkpoint

pytestmark = pytest.mark.interop


def test_lightning_checkpoint_is_unwrapped_with_its_ema_and_step(tmp_path):
    weights = {"model.model.x": torch.ones(2)}
    state = {"diffusion.model.model.x": torch.ones(2), "diffusion_ema.ema_model.model.model.x": torch.zeros(2)}
    torch.save({"state_dict": state, "global_step": 12, "optimizer_states": [{"lr": 1.0}]}, tmp_path / "a.ckpt")

    ckpt = read_sat_checkpoint(tmp_path / "a.ckpt")

    assert ckpt.step == 12 and set(ckpt.raw) == set(weights) and torch.equal(ckpt.ema["model.model.x"], torch.zeros(2))


def test_a_checkpoint_holding_python_objects_is_refused_with_what_to_do(tmp_path):
    torch.save({"state_dict": {"x": torch.ones(1)}, "hyper_parameters": argparse.Namespace(a=1)}, tmp_path / "a.ckpt")

    with pytest.raises(ValueError, match="unwrap_model.py"):
        read_sat_checkpoint(tmp_path / "a.ckpt")


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_sat_checkpoint(tmp_path / "nope.ckpt")
