"""``faceembed align --engine ray``: :func:`~faceembed.faces.align_files.align_one` on Ray Data workers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.engines.ray.session import (
    Stopwatch,
    local_cpus,
    plan_workers,
    ray_session,
    records_column,
    run_pipeline,
)
from faceembed.faces.align import SimilarityMethod
from faceembed.faces.align_files import (
    AlignOptions,
    AlignSummary,
    align_one,
    claim_alignment,
    finish_alignment,
    record_results,
)


class AlignWorker:
    """One Ray Data worker: aligns and writes the images of each batch it is given."""

    def __init__(self, image_root: str, out_dir: str, size: tuple[int, int], method: SimilarityMethod,
                 template: str | None):
        self.image_root, self.out_dir, self.size, self.method = image_root, out_dir, tuple(size), method
        self.template = template

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = []
        for rel, lm in zip(rows["rel"], rows["landmarks"], strict=True):
            points = np.asarray(json.loads(str(lm)), dtype=np.float64) if lm else None
            rel, status, reason, kind = align_one(self.image_root, self.out_dir, str(rel), points, self.size,
                                                  self.method, self.template)
            records.append({"rel": rel, "status": status, "reason": reason, "kind": kind})
        return records_column(records)


def align_dataset_ray(image_root: str | Path, landmarks: dict[str, np.ndarray], relpaths: Sequence[str],
                      out_dir: str | Path, workers: int | None = None, address: str | None = None,
                      landmarks_source: dict[str, Any] | None = None, **options: Any) -> AlignSummary:
    """:func:`~faceembed.faces.align_files.align_dataset` on Ray Data: same PNGs, ``skipped.txt``, contact sheet and
    resume; ``options`` are :class:`~faceembed.faces.align_files.AlignOptions` fields. ``workers``: Ray workers
    (default one per CPU of the local instance or cluster); ``address``: a cluster to join (default: start a
    local Ray instance unless one is running)."""
    from rich.progress import Progress

    o = AlignOptions(**options).check()
    size = o.size
    clock = Stopwatch()
    out = Path(out_dir)
    summary = AlignSummary()
    todo, summary.skipped = claim_alignment(image_root, landmarks, relpaths, out, o, landmarks_source)
    rows = [{"rel": rel, "landmarks": json.dumps(np.asarray(landmarks[rel], dtype=np.float64).tolist())
             if rel in landmarks else ""} for rel in todo]
    with ray_session(address, local_cpus() if address is None else None) as ray:
        total = ray.cluster_resources().get("CPU", local_cpus())
        n, cpus, _ = plan_workers(total, workers, None)
        kwargs = {"image_root": str(Path(image_root).resolve()), "out_dir": str(out.resolve()), "size": size,
                  "method": o.method, "template": o.template}
        with Progress(disable=not o.progress, transient=True) as bar:
            task = bar.add_task(f"align (ray, {n} workers)", total=len(todo))
            for record in run_pipeline(ray, rows, AlignWorker, kwargs, n, cpus, batch_size=32):
                record_results(summary, [(record["rel"], record["status"], record["reason"], record["kind"])],
                               o.on_error)
                bar.advance(task)
    finish_alignment(summary, relpaths, out, o.contact_sheet)
    summary.seconds = clock.seconds()
    return summary
