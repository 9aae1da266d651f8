"""STFT-loss benchmark: the stereo loss from shared left/right spectra against the loss on four waveforms.

``StereoSTFTLoss`` (``sa_train/models/autoencoder/losses.py``) scores mid (L+R), side (L-R), left and
right. The STFT is linear, so it takes the spectra of left and right of prediction and target (four
STFTs per resolution, one call) and forms mid and side by adding and subtracting them. The
baseline is the formulation before that change: ``MultiResolutionSTFTLoss`` called on the four
waveform pairs (eight STFTs per resolution). Both run in the same process, alternating, on the
demo's VAE training batch: one worker's micro-batch (2 crops of 8192 stereo samples), the demo's
six FFT sizes (2048 .. 64), A-weighting, one thread as each demo worker. Timed: the loss's forward
+ backward alone, and a whole VAE training step (forward, loss, backward, AdamW) of the demo's VAE
(``sa_train.demo.DEMO_MODEL``, random weights). Every run checks that the two losses agree.

    PYTHONPATH=. .venv/bin/python -m benchmarks.bench_stft_loss      # about a minute
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
from benchmarks.vae_recipe import StereoOfPlainLoss  # noqa: E402
from sa_train.models.autoencoder.losses import MultiResolutionSTFTLoss, StereoSTFTLoss  # noqa: E402

FFT_SIZES = [2048, 1024, 512, 256, 128, 64]  # the demo's model.autoencoder.losses.stft_fft_sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20, help="timed calls per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each, alternating")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (each demo worker has 1)")
    parser.add_argument("--no-append", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from sa_train.config import load_config
    from sa_train.demo import DEMO_MODEL
    from sa_train.models.diffusion_model import build_autoencoder

    cfg = load_config(None, DEMO_MODEL + ["training.stage=autoencoder"])
    torch.manual_seed(0)
    vae = build_autoencoder(cfg.model)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-6)
    real = 0.3 * torch.randn(2, 2, 8192)
    plain = MultiResolutionSTFTLoss(FFT_SIZES, perceptual_weighting=True)
    losses = {"four waveforms (before)": StereoOfPlainLoss(plain),
              "shared spectra": StereoSTFTLoss(FFT_SIZES, perceptual_weighting=True)}

    fake = (real + 0.1 * torch.randn_like(real)).requires_grad_(True)
    values = {name: loss(fake, real) for name, loss in losses.items()}
    first, second = values.values()
    if not torch.allclose(first, second, rtol=1e-4):
        raise SystemExit(f"the losses differ: {first.tolist()} against {second.tolist()}")

    def loss_alone(loss) -> None:
        loss(fake, real).sum().backward()

    def vae_step(loss) -> None:
        out = vae(real)
        (loss(out.reconstruction, real).mean() + 1e-4 * out.kl.mean()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times: dict[tuple[str, str], list[float]] = {}
    for what, body in (("loss forward + backward", loss_alone), ("VAE training step", vae_step)):
        for loss in losses.values():
            body(loss)  # warm-up
        for _ in range(args.repeats):
            for name, loss in losses.items():
                start = time.perf_counter()
                for _ in range(args.iterations):
                    body(loss)
                times.setdefault((what, name), []).append((time.perf_counter() - start) / args.iterations)

    parts = []
    for what in ("loss forward + backward", "VAE training step"):
        base, fast = (times[(what, name)] for name in losses)
        ratio = statistics.median(fast) / statistics.median(base)
        parts.append(f"{what}: {statistics.median(base) * 1e3:.1f} ms ({min(base) * 1e3:.1f}-{max(base) * 1e3:.1f}) "
                     f"-> {statistics.median(fast) * 1e3:.1f} ms ({min(fast) * 1e3:.1f}-{max(fast) * 1e3:.1f}) = "
                     f"{ratio:.2f}x")
    load = os.getloadavg()[0]
    entry = (f"- {datetime.date.today()} bench_stft_loss (stereo STFT loss, 2 x 2 x 8192 samples, FFT 2048..64, "
             f"A-weighted; four waveforms (before) -> shared spectra, medians of {args.repeats} alternating runs of "
             f"{args.iterations}, {args.threads} thread; {cpu_model()}, {os.cpu_count()} cores, load {load:.1f}; "
             f"{platform.machine()}): " + "; ".join(parts) + "; losses agree to 1e-4")
    record(entry, append=not args.no_append)


if __name__ == "__main__":
    main()
