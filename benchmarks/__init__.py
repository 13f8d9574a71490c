"""Benchmarks of gpuclust: suites, contenders, sizing and reports (`gpuclust bench`, `gpuclust size`).

Lives beside the package, not in it: a wheel install does not carry it, and the CLI says so.
"""
