"""Attention benchmark: time and peak memory of the attention backends at the U-Net's sequence lengths.

The U-Net's transformer blocks attend over the latent frames of one level: with the paper's 95.1 s
window (4096 latent frames, factors [1, 2, 2, 4]) that is 4096, 2048, 1024 and 256 tokens. Each
block runs self-attention over those tokens and cross-attention to the 79 context tokens (77 text
+ 2 timing), whose padding is masked. This benchmark calls ``sa_train.models.unet.attention.attention``
with batch 1, 16 heads x 64 dims (the paper's heads), at 1k, 2k, 4k and 8k tokens, for:

    math      softmax(q k^T / sqrt(D)) v: materialises the (batch, heads, L, L) scores (the baseline)
    sdpa      torch's scaled_dot_product_attention (flash / memory-efficient kernels)
    xformers  xformers.ops.memory_efficient_attention (CUDA and xformers installed only)

Peak memory is what the call allocates above its inputs: on CUDA ``torch.cuda.max_memory_allocated``;
on the CPU, where tracemalloc does not see torch's allocator, the running sum of the allocation
and free events recorded by ``torch.profiler`` with ``profile_memory=True``. Time is the best of a
few calls (one thread on the CPU), after a first call that is also the memory measurement.

Target (issue 7): memory of the memory-efficient paths grows linearly with length, and at 4k
tokens is at most 1/4 of math's. Prints a table with ratios against math and appends a dated
line to benchmarks/RESULTS.md.

    PYTHONPATH=. OMP_NUM_THREADS=1 python -m benchmarks.bench_attention
"""

from __future__ import annotations

import argparse
import datetime
import logging
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sa_train.models.unet.attention import attention, xformers_available  # noqa: E402

from benchmarks.results import record  # noqa: E402
logger = logging.getLogger("bench_attention")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
LENGTHS = (1024, 2048, 4096, 8192)
HEADS, HEAD_WIDTH = 16, 64
CONTEXT_TOKENS, REAL_CONTEXT_TOKENS = 79, 24  # a short prompt: most of the 77 text tokens are padding
TARGET_LENGTH, TARGET_FRACTION = 4096, 0.25
# Math on the CPU at 8k tokens holds 2 x 4.3 GB of scores and takes ~4x the 4k time on one core.
CPU_MATH_MAX_LENGTH = 4096


@dataclass
class Measurement:
    kind: str  # "self" or "cross"
    length: int
    backend: str
    seconds: float
    peak_bytes: int

    @property
    def scores_bytes(self) -> int:
        """The (1, heads, L, keys) float32 scores matrix that math materialises."""
        keys = self.length if self.kind == "self" else CONTEXT_TOKENS
        return HEADS * self.length * keys * 4


def cpu_peak_bytes(fn: Callable[[], None]) -> int:
    """Peak of torch's CPU allocations made by ``fn()`` above what existed before (profiler events)."""
    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Profiler clears events")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        if event.device_type() == torch.autograd.DeviceType.CPU:
            current += event.nbytes()
            peak = max(peak, current)
    return peak


def cuda_peak_bytes(fn: Callable[[], None]) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def best_seconds(fn: Callable[[], None], repeats: int, device: torch.device) -> float:
    best = math.inf
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def measure(kind: str, length: int, backend: str, device: torch.device, dtype: torch.dtype,
            repeats: int, backward: bool) -> Measurement:
    """One backend at one length: q (1, 16, L, 64) over L keys (self) or 79 masked keys (cross)."""
    g = torch.Generator(device=device).manual_seed(0)
    keys = length if kind == "self" else CONTEXT_TOKENS

    def tensor(n: int) -> torch.Tensor:
        x = torch.randn(1, HEADS, n, HEAD_WIDTH, generator=g, device=device, dtype=dtype)
        return x.requires_grad_(backward)

    q, k, v = tensor(length), tensor(keys), tensor(keys)
    mask = None
    if kind == "cross":
        mask = torch.zeros(1, CONTEXT_TOKENS, dtype=torch.bool, device=device)
        mask[:, :REAL_CONTEXT_TOKENS] = True

    def call() -> None:
        out = attention(q, k, v, key_padding_mask=mask, backend=backend)
        if backward:
            out.backward(torch.ones_like(out))
            q.grad = k.grad = v.grad = None

    start = time.perf_counter()
    peak = cuda_peak_bytes(call) if device.type == "cuda" else cpu_peak_bytes(call)
    first = time.perf_counter() - start
    # Long CPU calls are timed once more only: their spread is far below the differences measured.
    seconds = best_seconds(call, repeats if first < 1.0 else 1, device)
    return Measurement(kind, length, backend, seconds, peak)


def growth_exponent(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of log(value) against log(length)."""
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(max(y, 1.0)) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def table(results: list[Measurement]) -> str:
    by_key = {(m.kind, m.length, m.backend): m for m in results}
    lines = [
        f"{'kind':5s} {'tokens':>6s} {'backend':8s} {'time ms':>10s} {'vs math':>8s} "
        f"{'peak MB':>9s} {'vs math':>8s} {'math scores MB':>14s}"
    ]
    for m in results:
        base = by_key.get((m.kind, m.length, "math"))
        t_ratio = f"{m.seconds / base.seconds:7.2f}x" if base else "     n/a"
        m_ratio = f"{m.peak_bytes / base.peak_bytes:7.3f}x" if base and base.peak_bytes else "     n/a"
        lines.append(
            f"{m.kind:5s} {m.length:6d} {m.backend:8s} {m.seconds * 1e3:10.1f} {t_ratio} "
            f"{m.peak_bytes / 1e6:9.1f} {m_ratio} {m.scores_bytes / 1e6:14.1f}"
        )
    return "\n".join(lines)


def verdicts(results: list[Measurement], backends: list[str]) -> tuple[list[str], bool]:
    """Per memory-efficient backend: self-attention memory slope and the 4k fraction of math's."""
    notes, met = [], True
    math_4k = next((m for m in results if (m.kind, m.length, m.backend) == ("self", TARGET_LENGTH, "math")), None)
    for backend in backends:
        if backend == "math":
            continue
        points = [(m.length, m.peak_bytes) for m in results if m.kind == "self" and m.backend == backend]
        slope = growth_exponent(points)
        at_4k = next((b for n, b in points if n == TARGET_LENGTH), None)
        fraction = at_4k / math_4k.peak_bytes if at_4k is not None and math_4k else float("nan")
        ok = slope <= 1.15 and fraction <= TARGET_FRACTION
        met &= ok
        notes.append(
            f"{backend}: self-attention memory grows as L^{slope:.2f}; at {TARGET_LENGTH} tokens "
            f"{fraction:.4f}x math's ({'met' if ok else 'MISSED'}: target linear and <= {TARGET_FRACTION}x)"
        )
    math_points = [(m.length, m.peak_bytes) for m in results if m.kind == "self" and m.backend == "math"]
    if len(math_points) > 1:
        notes.append(f"math: self-attention memory grows as L^{growth_exponent(math_points):.2f}")
    return notes, met


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS), help="token counts (default 1k-8k)")
    parser.add_argument("--device", default="auto", help="'auto' (cuda when available), 'cpu' or 'cuda'")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per point, best kept (default 3)")
    parser.add_argument("--backward", action="store_true", help="time and measure forward + backward (default forward)")
    parser.add_argument("--cpu-math-8k", action="store_true",
                        help=f"also run math above {CPU_MATH_MAX_LENGTH} tokens on the CPU (about 9 GB, minutes)")
    parser.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible; use --device cpu")
    # The U-Net runs attention in bf16 under autocast on a GPU; the CPU trains in float32.
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    backends = ["math", "sdpa"] + (["xformers"] if device.type == "cuda" and xformers_available() else [])
    if device.type == "cpu":
        torch.set_num_threads(1)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread"
    passes = "forward+backward" if args.backward else "forward"
    print(f"attention: batch 1, {HEADS} heads x {HEAD_WIDTH}, {dtype}, {passes}, "
          f"{where}; cross-attention to {CONTEXT_TOKENS} tokens ({REAL_CONTEXT_TOKENS} real)")
    if device.type == "cuda" and "xformers" not in backends:
        print("xformers is not installed: only math and sdpa are measured")

    results: list[Measurement] = []
    skipped = []
    for kind in ("self", "cross"):
        for length in sorted(args.lengths):
            for backend in backends:
                if (backend == "math" and kind == "self" and device.type == "cpu" and length > CPU_MATH_MAX_LENGTH
                        and not args.cpu_math_8k):
                    skipped.append(length)
                    continue
                results.append(measure(kind, length, backend, device, dtype, args.repeats, args.backward))
                logger.info("%s", results[-1])
    print(table(results))
    if skipped:
        print(f"math self-attention skipped on the CPU at {sorted(set(skipped))} tokens "
              f"({HEADS * max(skipped) ** 2 * 4 / 1e9:.1f} GB per scores matrix, minutes on one core; "
              "--cpu-math-8k runs it)")
    notes, met = verdicts(results, backends)
    for note in notes:
        print(note)
    print(f"target: {'met' if met else 'MISSED'}")

    math_4k = {m.backend: m for m in results if m.kind == "self" and m.length == TARGET_LENGTH}
    speed = ", ".join(
        f"{b} {math_4k[b].seconds * 1e3:.0f} ms ({math_4k[b].seconds / math_4k['math'].seconds:.2f}x math)"
        for b in backends if b in math_4k and "math" in math_4k
    )
    entry = (f"- {datetime.date.today().isoformat()} bench_attention ({where}, {dtype}, "
             f"{'fwd+bwd' if args.backward else 'fwd'}, B=1, {HEADS}x{HEAD_WIDTH}; {platform.machine()}, "
             f"load {os.getloadavg()[0]:.1f}): " + "; ".join(notes) + f"; self-attention at {TARGET_LENGTH}: {speed}; "
             f"target {'met' if met else 'missed'}")
    record(entry, append=not args.no_append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
