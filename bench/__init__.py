"""Benchmarks: direct-to-fake vs Envoy alone vs Envoy + extproc, in one run.

Run ``python -m bench.run`` (see ``bench/README.md``).
"""
