"""Snake benchmark: the demo VAE's decode with graph-free in-place Snakes against the plain expression.

``Snake`` and ``SnakeBeta`` (``sa_train/models/autoencoder/blocks.py``) compute
``x + sin(alpha x)^2 / alpha`` in place when autograd records nothing (encoding, decoding, sampling):
one buffer instead of five, the same bits. The baseline is the expression as it is written for
training (``x + inverse * sin(alpha * x).pow(2)``), patched in for the baseline rows only. Both run
in the same process, alternating, under ``torch.no_grad()``, on the demo's VAE (``sa_train.demo.DEMO_MODEL``:
decoder width 256, 32 latent channels, strides 4 4 8 8; random weights, whose decode costs the same
as trained ones) decoding ``--windows`` latent windows of the demo's 6.3 s (272 frames), the demo's
evaluation of one model. Every run is checked to give the baseline's output bit for bit.

    PYTHONPATH=. .venv/bin/python -m benchmarks.bench_snake      # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.results import cpu_model, record  # noqa: E402


def baseline_forward(self, x: torch.Tensor) -> torch.Tensor:
    """Snake as autograd sees it: five temporaries."""
    return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=8, help="latent windows decoded per run")
    parser.add_argument("--frames", type=int, default=272, help="frames per window (the demo's 6.3 s)")
    parser.add_argument("--repeats", type=int, default=4, help="runs of each, alternating")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--no-append", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from sa_train.config import load_config
    from sa_train.demo import DEMO_MODEL
    from sa_train.models.autoencoder import blocks
    from sa_train.models.diffusion_model import build_autoencoder

    cfg = load_config(None, DEMO_MODEL + ["training.stage=autoencoder"])
    torch.manual_seed(0)
    vae = build_autoencoder(cfg.model).eval()
    latents = torch.randn(args.windows, cfg.model.autoencoder.latent_channels, args.frames)
    in_place = blocks.Snake.forward
    times: dict[str, list[float]] = {"baseline": [], "in place": []}
    reference = None
    with torch.no_grad():
        vae.decode(latents[:1, :, :32])  # warm-up
        for _ in range(args.repeats):
            for name, forward in (("baseline", baseline_forward), ("in place", in_place)):
                blocks.Snake.forward = forward
                start = time.perf_counter()
                audio = vae.decode(latents)
                times[name].append(time.perf_counter() - start)
                if reference is None:
                    reference = audio
                elif not torch.equal(audio, reference):
                    raise SystemExit(f"{name}: the decoded audio differs from the baseline's")
    blocks.Snake.forward = in_place
    base, fast = statistics.median(times["baseline"]), statistics.median(times["in place"])
    spread = lambda ts: f"{min(ts):.2f}-{max(ts):.2f}"  # noqa: E731
    load = os.getloadavg()[0]
    entry = (f"- {datetime.date.today()} bench_snake (the demo's VAE decoding {args.windows} windows of "
             f"{args.frames} frames, random weights, no_grad, {args.threads} threads, {args.repeats} runs each "
             f"alternating; {cpu_model()}, {os.cpu_count()} cores, load {load:.1f}; {platform.machine()}): "
             f"baseline Snake median {base:.2f} s ({spread(times['baseline'])}), in place {fast:.2f} s "
             f"({spread(times['in place'])}) = {fast / base:.2f}x the baseline; outputs bitwise equal")
    record(entry, append=not args.no_append)


if __name__ == "__main__":
    main()
