"""``infer``'s report types and statistics: per-file results, ``infer_summary.json`` (latency per call and per
image), the output roles ``outputs.json`` records from the model card; shared by the local and Ray engines."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.errors import FaceembedError
from faceembed.inference.backends import Backend

SUMMARY = "infer_summary.json"
OUTPUTS = "outputs.json"
SKIPPED = "skipped.txt"
STAGES = ("read", "model", "write")


@dataclass
class InferSummary:
    """What ``infer`` did and how fast (latencies in milliseconds, excluding warm-up).

    ``stage_seconds`` sums, over all workers, the time spent reading inputs, in model calls (warm-up
    included) and writing outputs; ``wall_seconds`` is the whole run (with model loading and, for the Ray
    engine, Ray's start-up) and ``wall_images_per_s`` the images of this run over it.
    """

    model: str
    backend: str
    precision: str
    files_done: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    images: int = 0
    calls: int = 0
    latency_ms_per_batch: dict[str, float] = field(default_factory=dict)
    latency_ms_per_image: float | None = None
    throughput_images_per_s: float | None = None
    failed: list[str] = field(default_factory=list)
    engine: str = "local"
    workers: int = 1
    stage_seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: float | None = None
    wall_images_per_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FileResult:
    """One input file done: its item count, output shapes, timed model calls and stage times (seconds)."""

    input: str
    count: int
    shapes: list[list[int]]
    times_ms: list[float]
    read_s: float
    model_s: float
    write_s: float


def latency_stats(times_ms: list[float]) -> dict[str, float]:
    """Mean, median, p90 and p99 of per-call latencies."""
    if not times_ms:
        return {}
    t = np.asarray(times_ms, dtype=np.float64)
    return {
        "mean": float(t.mean()),
        "median": float(np.median(t)),
        "p90": float(np.percentile(t, 90)),
        "p99": float(np.percentile(t, 99)),
        "count": int(t.size),
    }


def output_roles(model: str | Path) -> dict[str, str]:
    """Output name -> role (embedding, mu, sigma_sq, logits, ...) from the model's card; {} without one."""
    from faceembed.models.card_io import read_card

    try:
        return {o.name: o.role for o in read_card(model).outputs}
    except FaceembedError:
        return {}


def item_shapes(be: Backend) -> list:
    return list(getattr(be, "output_item_shapes", [None] * len(be.output_names)))


def finish_summary(summary: InferSummary, times: list[float], loop: int) -> None:
    """Per-call statistics, and per-image latency / throughput over every timed image (``loop`` runs each)."""
    summary.calls = len(times)
    summary.latency_ms_per_batch = latency_stats(times)
    timed_images = summary.images * loop
    if times and timed_images:
        summary.latency_ms_per_image = sum(times) / timed_images
        summary.throughput_images_per_s = 1e3 / summary.latency_ms_per_image
