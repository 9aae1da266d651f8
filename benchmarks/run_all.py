"""`make bench`: the CPU benchmarks, one after another; each prints its table and appends to RESULTS.md."""

from __future__ import annotations

import sys

from benchmarks import bench_data, bench_orchestration


def main() -> int:
    status = 0
    for name, bench in (("data", bench_data), ("orchestration", bench_orchestration)):
        print(f"\n=== benchmark: {name} ===", flush=True)
        status |= bench.main([])
    return status


if __name__ == "__main__":
    sys.exit(main())
