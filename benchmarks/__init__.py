"""Benchmarks: `python -m benchmarks` prints the figures each issue asks for."""
