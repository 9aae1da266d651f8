"""Scaling benchmark: how the training step time of the U-Net grows with the window length.

One training step (forward, v-style loss, backward, AdamW step) of ``UNet1D`` on the CPU with one
thread, timed in CPU seconds of the process (the machine is shared; wall time is printed beside),
for two presets:

    tiny    configs/model/tiny.yaml's U-Net (base_width 32, multipliers [1, 2, 2], factors [1, 2],
            attention [0, 1, 1]; 0.85M parameters)
    medium  base_width 64, multipliers [1, 2, 2, 4], factors [1, 2, 2], attention [0, 1, 1, 1] (9.3M)

at 0.5x, 1x, 2x and 4x the tiny experiment's window of 128 latent frames, micro-batch 4, with
the preset's 66 context tokens. The step is split into three parts:

    attention   the attention kernels (sdpa forward and backward; their share of the profiled
                fwd+bwd self time, from torch.profiler, applied to the unprofiled time)
    rest        everything else in forward and backward: convolutions, linear layers, norms
    optimizer   AdamW's step (depends on the parameter count only)

Baseline: the 1x window. Each part's growth exponent is the least-squares slope of log(time)
against log(length): 1 for work linear in length, 2 for attention's L^2 once it dominates its
own fixed costs, 0 for the optimizer. Target (issue 7): report how the cost grows (the convolution
parts linear, the attention parts as measured). Prints a table with ratios to the 1x window and
appends a dated line to benchmarks/RESULTS.md.

    PYTHONPATH=. OMP_NUM_THREADS=1 python -m benchmarks.bench_scaling
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import math
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Optional

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from sa_train.config import load_config  # noqa: E402
from sa_train.models.unet.config import UNetConfig  # noqa: E402
from sa_train.models.unet.unet import UNet1D  # noqa: E402

from benchmarks.results import record  # noqa: E402
logger = logging.getLogger("bench_scaling")
RESULTS = os.path.join(REPO, "benchmarks", "RESULTS.md")
CONFIG = os.path.join(REPO, "configs", "experiments", "tiny_diffusion.yaml")
BASE_FRAMES = 128
MULTIPLIERS = (0.5, 1, 2, 4)
ATTENTION_OPS = ("scaled_dot_product", "flash_attention", "efficient_attention")


@dataclass
class StepTime:
    frames: int
    forward_backward: float  # median CPU seconds (one thread: robust to the load of a shared machine)
    optimizer: float
    attention_share: float  # of forward + backward
    wall: float  # median wall seconds of the whole step

    @property
    def attention(self) -> float:
        return self.forward_backward * self.attention_share

    @property
    def rest(self) -> float:
        return self.forward_backward - self.attention

    @property
    def total(self) -> float:
        return self.forward_backward + self.optimizer


def presets() -> dict[str, UNetConfig]:
    cfg = load_config(CONFIG)
    tiny = cfg.model.unet
    medium = dataclasses.replace(tiny, base_width=64, multipliers=[1, 2, 2, 4], factors=[1, 2, 2],
                                 attention_blocks=[0, 1, 1, 1])
    return {"tiny": tiny, "medium": medium}


def context_tokens() -> int:
    cfg = load_config(CONFIG)
    return cfg.model.conditioning.text_encoder.max_length + 2  # + the two timing tokens


def attention_share(step, repeats: int = 2) -> float:
    """Share of the attention kernels in the self time of ``repeats`` profiled forwards + backwards."""
    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Profiler clears events")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    attention = sum(e.self_cpu_time_total for e in events if any(op in e.key for op in ATTENTION_OPS))
    return attention / total if total else 0.0


class TrainingStep:
    """A fresh U-Net, its AdamW and one fixed micro-batch of ``frames`` latent frames."""

    def __init__(self, unet_cfg: UNetConfig, frames: int, batch: int, tokens: int):
        torch.manual_seed(0)
        self.frames = frames
        self.model = UNet1D(unet_cfg)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, unet_cfg.in_channels, frames, generator=g)
        self.t = torch.rand(batch, generator=g)
        self.context = torch.randn(batch, tokens, unet_cfg.context_width, generator=g)
        self.mask = torch.ones(batch, tokens, dtype=torch.bool)
        self.target = torch.randn_like(self.x)
        self.forward_backward_s: list[float] = []
        self.optimizer_s: list[float] = []
        self.wall_s: list[float] = []

    def forward_backward(self) -> None:
        loss = (self.model(self.x, self.t, self.context, self.mask) - self.target).square().mean()
        loss.backward()

    def optimizer_step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def timed(self) -> None:
        """One step, its CPU times (forward+backward, optimizer) and wall time recorded."""
        start, start_wall = time.process_time(), time.perf_counter()
        self.forward_backward()
        middle = time.process_time()
        self.optimizer_step()
        self.forward_backward_s.append(middle - start)
        self.optimizer_s.append(time.process_time() - middle)
        self.wall_s.append(time.perf_counter() - start_wall)

    def result(self) -> StepTime:
        share = attention_share(self.forward_backward)
        self.optimizer.zero_grad(set_to_none=True)
        return StepTime(self.frames, statistics.median(self.forward_backward_s), statistics.median(self.optimizer_s),
                        share, statistics.median(self.wall_s))


def time_steps(unet_cfg: UNetConfig, lengths: list[int], batch: int, tokens: int, steps: int) -> list[StepTime]:
    """Median times of ``steps`` steps per window length, after two warm-up steps each. The lengths
    take turns (one step each per round), so a change in the machine's load hits all of them alike."""
    runs = [TrainingStep(unet_cfg, frames, batch, tokens) for frames in lengths]
    for run in runs:
        for _ in range(2):
            run.forward_backward()
            run.optimizer_step()
    for _ in range(steps):
        for run in runs:
            run.timed()
    return [run.result() for run in runs]


def growth_exponent(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of log(seconds) against log(frames)."""
    xs = [math.log(f) for f, _ in points]
    ys = [math.log(max(s, 1e-9)) for _, s in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def affine_fit(points: list[tuple[int, float]]) -> tuple[float, float, float]:
    """Least-squares ``seconds = fixed + per_frame x frames``: (fixed, per_frame, largest relative residual)."""
    xs, ys = [float(f) for f, _ in points], [s for _, s in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    fixed = my - slope * mx
    residual = max(abs(fixed + slope * x - y) / y for x, y in zip(xs, ys))
    return fixed, slope, residual


PARTS = ("total", "rest", "attention", "optimizer")


def table(name: str, params: int, rows: list[StepTime]) -> tuple[str, dict[str, float]]:
    base = next((r for r in rows if r.frames == BASE_FRAMES), rows[0])
    lines = [f"{name} ({params / 1e6:.2f}M parameters)",
             f"{'frames':>6s} {'step ms':>9s} {'vs 1x':>7s} {'rest ms':>9s} {'vs 1x':>7s} "
             f"{'attn ms':>9s} {'vs 1x':>7s} {'attn %':>7s} {'optim ms':>9s} {'wall ms':>9s}"]
    for r in rows:
        lines.append(
            f"{r.frames:6d} {r.total * 1e3:9.1f} {r.total / base.total:6.2f}x {r.rest * 1e3:9.1f} "
            f"{r.rest / base.rest:6.2f}x {r.attention * 1e3:9.1f} {r.attention / max(base.attention, 1e-9):6.2f}x "
            f"{r.attention_share * 100:6.1f}% {r.optimizer * 1e3:9.1f} {r.wall * 1e3:9.1f}"
        )
    slopes = {part: growth_exponent([(r.frames, getattr(r, part)) for r in rows]) for part in PARTS}
    lines.append("growth exponents (time ~ length^k): " + ", ".join(f"{p} {k:.2f}" for p, k in slopes.items()))
    if len(rows) >= 3:
        top = rows[-2:]
        tail = {p: growth_exponent([(r.frames, getattr(r, p)) for r in top]) for p in ("rest", "attention")}
        lines.append(f"between the two longest windows: rest {tail['rest']:.2f}, attention {tail['attention']:.2f}")
        slopes.update({f"{p} (longest)": k for p, k in tail.items()})
    fixed, per_frame, residual = affine_fit([(r.frames, r.rest) for r in rows])
    lines.append(f"rest = {fixed * 1e3:.1f} ms + {per_frame * BASE_FRAMES * 1e3:.1f} ms per {BASE_FRAMES} frames "
                 f"(largest deviation {residual:.1%}): linear in length plus a fixed per-step cost")
    slopes["rest fixed ms"], slopes[f"rest ms per {BASE_FRAMES} frames"] = fixed * 1e3, per_frame * BASE_FRAMES * 1e3
    return "\n".join(lines), slopes


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--multipliers", type=float, nargs="+", default=list(MULTIPLIERS),
                        help=f"window lengths as multiples of {BASE_FRAMES} latent frames (default 0.5 1 2 4)")
    parser.add_argument("--batch", type=int, default=4, help="micro-batch (default 4)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per point, median kept (default 5)")
    parser.add_argument("--presets", nargs="+", default=["tiny", "medium"], choices=["tiny", "medium"])
    parser.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    configs, tokens = presets(), context_tokens()
    summaries = []
    start = time.perf_counter()
    for name in args.presets:
        unet_cfg = configs[name]
        params = sum(p.numel() for p in UNet1D(unet_cfg).parameters())
        step = unet_cfg.downsampling  # lengths must divide by the U-Net's downsampling
        lengths = sorted({max(step, int(BASE_FRAMES * m) // step * step) for m in args.multipliers})
        rows = time_steps(unet_cfg, lengths, args.batch, tokens, args.steps)
        text, slopes = table(name, params, rows)
        print(text + "\n")
        summaries.append(f"{name} {params / 1e6:.1f}M: " + ", ".join(
            f"{p} {k:.1f}" if "ms" in p else f"{p} L^{k:.2f}" for p, k in slopes.items()))
    print(f"times are CPU seconds of the one thread (median of {args.steps} steps); "
          f"CPU, 1 thread, micro-batch {args.batch}, {tokens} context tokens; {time.perf_counter() - start:.0f} s")
    entry = (f"- {datetime.date.today().isoformat()} bench_scaling (fwd+bwd+AdamW, {args.batch} x "
             f"{', '.join(str(m) for m in args.multipliers)} x {BASE_FRAMES} frames, 1 thread; {platform.machine()}, "
             f"load {os.getloadavg()[0]:.1f}): " + "; ".join(summaries))
    record(entry, append=not args.no_append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
