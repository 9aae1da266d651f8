"""`make bench`: the benchmarks, one after another; each prints its table and appends to RESULTS.md.

The CPU set takes about 13 minutes on 2 cores. bench_gpu runs last: on a machine without a GPU it
only prints "no GPU: ..."; on a GPU machine it measures the paper's U-Net (a few minutes more).
A benchmark that fails is reported and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import logging
import sys
import time

from benchmarks import (
    bench_attention,
    bench_data,
    bench_ema,
    bench_embedders,
    bench_gpu,
    bench_orchestration,
    bench_samplers,
    bench_scaling,
    bench_zero_memory,
)

logger = logging.getLogger("benchmarks.run_all")

BENCHMARKS = (
    ("data", bench_data),
    ("orchestration", bench_orchestration),
    ("attention", bench_attention),
    ("zero memory", bench_zero_memory),
    ("samplers", bench_samplers),
    ("scaling", bench_scaling),
    ("ema", bench_ema),
    ("embedders", bench_embedders),
    ("gpu", bench_gpu),
)


def main() -> int:
    status = 0
    durations = []
    for name, bench in BENCHMARKS:
        print(f"\n=== benchmark: {name} ===", flush=True)
        start = time.perf_counter()
        try:
            status |= bench.main([])
        except Exception:  # one broken benchmark must not hide the figures of the others
            logger.exception("benchmark %s failed", name)
            status = 1
        durations.append(f"{name} {time.perf_counter() - start:.0f} s")
        sys.stdout.flush()
    print("\n=== times: " + ", ".join(durations) + " ===")
    return status


if __name__ == "__main__":
    sys.exit(main())
