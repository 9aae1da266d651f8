"""The `sa-train` command line: help text everywhere, config errors exit 2 fast and without Ray."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sa_train.cli.main import EXIT_CONFIG_ERROR, build_parser, main
from sa_train.config import from_yaml, load_config

ROOT = Path(__file__).resolve().parents[1]
TINY_DIFFUSION = "configs/experiments/tiny_diffusion.yaml"
CONSOLE_SCRIPT = Path(sys.executable).parent / "sa-train"


def run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a command in a fresh process from the repository root, with the package importable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def sa_train_command() -> list[str]:
    """The venv's console script when installed, else the module entry point."""
    return [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "sa_train"]


def subparsers_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """{"train": parser, "data check": parser, ...}: every registered (sub)subcommand."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {inner}": p for inner, p in subparsers_of(sub).items()})
    return found


def actions_without_help(parser: argparse.ArgumentParser) -> list[str]:
    """Options and positionals of one parser that have no help text."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            # The group itself shows as COMMAND; each of its choices must say what it does.
            missing += [f"subcommand {c.dest}" for c in action._choices_actions if not (c.help or "").strip()]
        elif not (action.help or "").strip() or action.help == argparse.SUPPRESS:
            missing.append("/".join(action.option_strings) or action.dest)
    return missing


SUBCOMMANDS = sorted(subparsers_of(build_parser()))


def test_the_expected_subcommands_are_registered():
    assert "train" in SUBCOMMANDS


def test_top_level_parser_has_help_for_every_option():
    assert actions_without_help(build_parser()) == []


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_option_of_every_subcommand_has_help(name):
    parser = subparsers_of(build_parser())[name]
    assert actions_without_help(parser) == [], f"sa-train {name}"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help_exits_zero(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*name.split(), "--help"])
    assert exit_.value.code == 0
    assert "usage: sa-train " + name in capsys.readouterr().out


def test_console_script_help_exits_zero_and_lists_subcommands():
    result = run([*sa_train_command(), "--help"])
    assert result.returncode == 0, result.stderr
    for name in SUBCOMMANDS:
        assert name.split()[0] in result.stdout
    assert "--verbose" in result.stdout and "--quiet" in result.stdout


def test_python_dash_m_sa_train_help_works():
    result = run([sys.executable, "-m", "sa_train", "--help"])
    assert result.returncode == 0, result.stderr
    assert "usage: sa-train" in result.stdout


def test_no_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_misspelt_key_on_the_command_line_exits_2_naming_it_and_the_fix():
    result = run([*sa_train_command(), "train", TINY_DIFFUSION, "training.stepz=5"])
    assert result.returncode == EXIT_CONFIG_ERROR
    assert "training.stepz" in result.stderr
    assert "training.steps" in result.stderr.replace("training.stepz", "")
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


def test_validation_error_exits_2_with_one_line(capsys):
    rc = main(["train", TINY_DIFFUSION, "model.unet.in_channels=8"])
    err = capsys.readouterr().err
    assert rc == EXIT_CONFIG_ERROR
    assert "model.unet.in_channels=8" in err
    assert err.strip().count("\n") == 0


def test_missing_config_file_exits_2_naming_it(capsys):
    rc = main(["train", "configs/experiments/no_such_experiment.yaml"])
    assert rc == EXIT_CONFIG_ERROR
    assert "no_such_experiment.yaml" in capsys.readouterr().err


def test_print_config_prints_yaml_that_loads_back_to_the_same_config(capsys):
    overrides = ["training.steps=7", "model.unet.multipliers=[1,2,2]", "tracking.run_name=printed"]
    rc = main(["train", str(ROOT / TINY_DIFFUSION), *overrides, "--print-config"])
    out = capsys.readouterr().out
    assert rc == 0
    assert from_yaml(out) == load_config(ROOT / TINY_DIFFUSION, overrides)
    assert "steps: 7" in out


# One fresh interpreter runs both commands in-process, so that what they import can be checked
# (tests in this process already imported everything) while paying for one start-up only.
FRESH_PROCESS_SCRIPT = """
import contextlib, io, json, sys
from sa_train.cli.main import main
results = {}
for name, argv in (("error", ["train", %(config)r, "training.stepz=5"]), ("print", ["train", %(config)r, "--print-config"])):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    results[name] = {"rc": rc, "out": out.getvalue(), "err": err.getvalue(), "ray": "ray" in sys.modules}
results["torch"] = "torch" in sys.modules
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def fresh_process() -> dict:
    result = run([sys.executable, "-c", FRESH_PROCESS_SCRIPT % {"config": TINY_DIFFUSION}])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_config_error_exits_2_without_importing_ray(fresh_process):
    error = fresh_process["error"]
    assert error["rc"] == EXIT_CONFIG_ERROR
    assert "training.stepz" in error["err"] and "training.steps" in error["err"].replace("training.stepz", "")
    assert error["ray"] is False


def test_print_config_exits_0_without_ray_and_loads_back(fresh_process):
    printed = fresh_process["print"]
    assert printed["rc"] == 0
    assert printed["ray"] is False
    assert from_yaml(printed["out"]) == load_config(ROOT / TINY_DIFFUSION)


def test_config_commands_do_not_import_torch(fresh_process):
    assert fresh_process["torch"] is False
