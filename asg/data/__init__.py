"""Benchmark data: readers for the original release formats and Lightning datamodules."""
