"""stable-audio-tools (SAT) as a test oracle: its own modules, loaded from the side folder that
`make interop` fills (.interop/sat, or $SA_TRAIN_SAT_DIR). Nothing of SAT is in this repository.

Its `dac` package imports descript-audiotools (and argbind) at package level, for file I/O that the
model classes never use; those two packages are replaced by empty stand-ins, and the `dac` and
`dac.model` package __init__ files are skipped, so only the model modules load.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import pytest
import torch

# --import-mode=importlib leaves sys.path alone; the tests import sat_helpers.py by name.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ROOT = Path(__file__).resolve().parents[2]
SAT_DIR = Path(os.environ.get("SA_TRAIN_SAT_DIR", ROOT / ".interop" / "sat"))


def _stub_audiotools() -> None:
    if "audiotools" in sys.modules:
        return
    audiotools = types.ModuleType("audiotools")
    ml = types.ModuleType("audiotools.ml")

    class BaseModel(torch.nn.Module):
        INTERN: list = []
        EXTERN: list = []

    ml.BaseModel = BaseModel
    audiotools.ml = ml
    audiotools.AudioSignal = type("AudioSignal", (), {})
    audiotools.STFTParams = type("STFTParams", (), {})
    sys.modules["audiotools"] = audiotools
    sys.modules["audiotools.ml"] = ml


def _bare_package(name: str, path: Path) -> None:
    """Register package ``name`` without running its __init__ (its submodules import normally)."""
    if name not in sys.modules:
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module


@pytest.fixture(scope="session")
def sat() -> types.SimpleNamespace:
    """SAT's model modules: autoencoders, diffusion, adp, conditioners, factory."""
    if not (SAT_DIR / "stable_audio_tools").is_dir():
        pytest.skip(f"stable-audio-tools is not installed in {SAT_DIR}: run `make interop` to install it")
    if (SAT_DIR / "tests").exists():
        pytest.fail(f"{SAT_DIR / 'tests'} would shadow this project's tests package: run `make interop` again")
    if str(SAT_DIR) not in sys.path:
        sys.path.append(str(SAT_DIR))  # after the project's own paths
    _stub_audiotools()
    _bare_package("dac", SAT_DIR / "dac")
    _bare_package("dac.model", SAT_DIR / "dac" / "model")
    names = ("autoencoders", "diffusion", "adp", "conditioners", "factory")
    modules = {n: importlib.import_module(f"stable_audio_tools.models.{n}") for n in names}
    return types.SimpleNamespace(**modules)


@pytest.fixture
def run_cli():
    """Run `sa-train ARGS...` in this process; returns the exit code."""
    from sa_train.cli.main import main

    return lambda *args: main([str(a) for a in args])
