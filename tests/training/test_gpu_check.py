"""`make gpu-check` (benchmarks/gpu_check.py): says so and exits 0 without a GPU; every section runs
in its CPU smoke mode (the figures there are meaningless: it checks the script, not the GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def run_check(*args: str, timeout: int) -> subprocess.CompletedProcess:
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so the no-GPU path is what runs, on any machine.
    env = dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def gpu_check_lines() -> int:
    return sum("gpu_check (" in line for line in RESULTS.read_text(encoding="utf-8").splitlines())


def test_without_a_gpu_it_says_so_exits_zero_and_appends_nothing():
    before = gpu_check_lines()
    run = run_check(timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("no GPU:") and "make gpu-check" in run.stdout
    assert gpu_check_lines() == before


def test_the_makefile_target_runs_the_script():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "\ngpu-check:" in makefile and "-m benchmarks.gpu_check" in makefile


@pytest.mark.slow
def test_cpu_smoke_runs_every_section_into_one_table():
    before = gpu_check_lines()
    run = run_check("--cpu-smoke", timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    table = run.stdout[run.stdout.index("\ncheck "):]
    for row in ("attention tests (pytest)", "attention sdpa vs math (cross, padded", "train step sdpa",
                "ZeRO-0 peak memory", "ZeRO-1 peak memory", "ZeRO-2 peak memory", "ZeRO-3 peak memory",
                "generation 0.7 s stereo"):
        assert row in table, row
    assert " error " not in table and "none failed" in run.stdout
    assert gpu_check_lines() == before  # a smoke run appends nothing
