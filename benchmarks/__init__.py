"""Benchmarks and the workspace generator; each prints the figures it measured."""
