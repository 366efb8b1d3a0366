"""Runtimes: the embedded one here; the distributed one lives with the agents."""
