"""Benchmarks (not timed tests): each ``bench_*.py`` prints one JSON line of figures."""
