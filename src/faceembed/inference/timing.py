"""Latency measurement shared by ``demo`` and ``bench``: warm up, then time repeated model calls."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from faceembed.inference.backends import Backend


def time_calls(backend: Backend, batch: np.ndarray, warmup: int = 3, min_runs: int = 10,
               min_seconds: float = 0.5, max_runs: int = 1000) -> np.ndarray:
    """Per-call latencies in ms of ``backend.run(batch)`` after ``warmup`` untimed calls.

    Runs at least ``min_runs`` calls and at least ``min_seconds`` in total (capped at ``max_runs``).
    """
    for _ in range(warmup):
        backend.run(batch)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        backend.run(batch)
        times.append((time.perf_counter() - t0) * 1e3)
    return np.asarray(times)


def latency_per_image(backend: Backend, inputs: np.ndarray, batch_sizes: Sequence[int] = (1, 4, 8, 16, 32),
                      **kwargs) -> dict[str, float]:
    """Median ms per image at each batch size, on the first ``b`` rows of ``inputs``."""
    result = {}
    for b in batch_sizes:
        batch = np.ascontiguousarray(inputs[:b])
        result[str(b)] = float(np.median(time_calls(backend, batch, **kwargs)) / b)
    return result
