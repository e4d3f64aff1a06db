"""Benchmark and reproduction scripts; each writes its table and the command that made it to results/."""
