"""The front doors stay reliable: the installed stack loads, the CLI fails loudly, and what the
README and error messages promise exists."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sa_train.cli import main as cli_main
from sa_train.cli.stack_check import CHECKS, check

ROOT = Path(__file__).resolve().parents[1]


def test_the_installed_stack_loads_in_a_fresh_process():
    proc = subprocess.run([sys.executable, "-m", "sa_train.cli.stack_check"], capture_output=True, text=True,
                          timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checked = {package for package, _ in CHECKS}
    assert {"torch", "torchaudio", "transformers", "deepspeed", "ray", "mlflow"} <= checked


def test_a_package_that_does_not_load_is_named_with_its_error():
    error = check("torchaudio", "raise OSError('libtorchaudio.so: undefined symbol: torch_exception_x')")
    assert error is not None and "undefined symbol" in error
    assert check("torch", "import torch") is None


def test_the_lock_pins_torch_and_torchaudio_to_one_pair_and_everything_exactly():
    for lock in ("requirements.lock", "requirements-dev.lock", "requirements-gpu.lock"):
        pins = {}
        for line in (ROOT / lock).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-"):
                assert "==" in line, f"{lock}: {line!r} is not pinned exactly"
                name, version = line.split("==")
                pins[name.split("[")[0].lower()] = version.split(";")[0].strip()
        assert pins["torch"] == "2.11.0" and pins["torchaudio"] == "2.11.0", lock
        assert pins["deepspeed"].startswith("0.19.") and pins["ray"].startswith("2.60."), lock
    installed = importlib.metadata.version("torchaudio")
    assert installed == "2.11.0", f"torchaudio {installed} is installed, not the locked 2.11.0"


def test_the_dev_install_has_the_metric_models_so_their_tests_run_instead_of_skipping(lock_pins):
    """The embedder tests skip without torchopenl3 / hear21passt (for a runtime-only install); the
    dev install (`make test`, CI) must carry them at the lock's versions, or those skips would hide
    a broken eval extra."""
    pins = lock_pins("requirements-dev.lock")
    for package, module in (("torchopenl3", "torchopenl3"), ("hear21passt", "hear21passt")):
        assert importlib.metadata.version(package) == pins[package], package
        proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"import {module} fails: {proc.stderr[-2000:]}"


def test_a_subcommand_module_that_cannot_be_imported_stops_the_cli_with_its_name(monkeypatch):
    monkeypatch.setattr(cli_main, "SUBCOMMAND_MODULES", (*cli_main.SUBCOMMAND_MODULES, "sa_train.cli.no_such_cmd"))
    with pytest.raises(SystemExit, match=r"sa_train\.cli\.no_such_cmd cannot be imported"):
        cli_main.build_parser()


def registered_subcommands() -> set[str]:
    parser = cli_main.build_parser()
    (group,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(group.choices)


def test_the_readme_lists_exactly_the_registered_subcommands():
    readme = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"^\s+sa-train ([a-z][a-z-]*)", readme, flags=re.MULTILINE))
    assert listed == registered_subcommands()


def all_option_strings(parser: argparse.ArgumentParser) -> set[str]:
    options = set()
    for action in parser._actions:
        options.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options |= all_option_strings(sub)
    return options


# Flags of other programs that sa_train's messages quote (mlflow ui, ray, pip, pytest).
OTHER_PROGRAMS_FLAGS = {"--backend-store-uri", "--address", "--working-dir", "--head", "--no-deps",
                        "--no-build-isolation", "--node-ip-address", "--dashboard-host", "--port",
                        "--local-dir"}  # --local-dir: `hf download` (huggingface_hub)


def test_every_flag_a_message_tells_the_user_to_pass_exists():
    known = all_option_strings(cli_main.build_parser()) | OTHER_PROGRAMS_FLAGS
    quoted = {}
    for path in (ROOT / "sa_train").rglob("*.py"):
        for flag in re.findall(r"""["'`\s(](--[a-z][a-z0-9-]+)""", path.read_text()):
            quoted.setdefault(flag, path.relative_to(ROOT))
    unknown = {flag: str(path) for flag, path in quoted.items() if flag not in known}
    assert not unknown, f"messages name flags that no command has: {unknown}"
