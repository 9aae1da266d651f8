"""Benchmarks of sa_train; each module runs with `python -m benchmarks.<name>` (see README.md)."""
