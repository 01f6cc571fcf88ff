"""Benchmarks comparing cirrus with its baselines; run each module with `python -m`."""
