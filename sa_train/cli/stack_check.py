"""Imports the pinned stack in fresh processes and names the package that fails to load.

A broken install (for example a torchaudio build that does not load against the installed torch)
otherwise surfaces as an obscure error deep inside a training run. `python -m sa_train.cli.stack_check`
runs each check in its own interpreter, so one failure cannot hide another, and exits 1 naming
every package that failed with the last line of its error.
"""

from __future__ import annotations

import subprocess
import sys

# (package, code that must run without error): each loads the compiled parts a run needs, not
# only the package's __init__.
CHECKS: tuple[tuple[str, str], ...] = (
    ("torch", "import torch; torch.ones(2) @ torch.ones(2)"),
    ("torchaudio", "import torchaudio, torch; torchaudio.functional.resample(torch.zeros(1, 64), 2, 1)"),
    ("transformers", "import transformers.audio_utils, transformers; transformers.T5Config()"),
    ("deepspeed", "import deepspeed, deepspeed.ops.op_builder"),
    ("ray", "import ray, ray.train.torch, ray.tune, ray.data"),
    ("mlflow", "import mlflow, mlflow.tracking"),
    ("soundfile", "import soundfile; assert soundfile.__libsndfile_version__"),
    ("omegaconf", "import omegaconf"),
    ("safetensors", "import safetensors.torch"),
)


def check(package: str, code: str) -> str | None:
    """Run `code` in a fresh interpreter; return None on success, else the error's last line."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if proc.returncode == 0:
        return None
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {proc.returncode}"


def main() -> int:
    failures = {}
    for package, code in CHECKS:
        error = check(package, code)
        if error is not None:
            failures[package] = error
    if not failures:
        print(f"stack check: {len(CHECKS)} packages load ({', '.join(p for p, _ in CHECKS)})")
        return 0
    for package, error in failures.items():
        print(f"stack check: {package} does not load: {error}", file=sys.stderr)
    print(
        "The installed packages do not match the lock. Reinstall from it: "
        "rm -rf .venv && make install (or make install-dev).",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
