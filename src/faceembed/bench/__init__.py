"""Benchmarks: every model x backend x precision x batch against the peers' defaults (``bench.run``)."""
