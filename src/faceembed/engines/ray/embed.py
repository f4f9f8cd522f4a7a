"""``enroll`` / ``identify`` embedding on Ray Data: :func:`~faceembed.faces.embed.embed_images` on chunks.

Each worker loads the face model once (:meth:`FaceModel.load`) and runs ``embed_images`` (detect unless
landmarks are given, align, embed) on chunks of ``chunk`` images, one process per worker; the driver puts the
rows back in the order of ``relpaths``. Chunks are multiples of ``embed``'s model batch (64), so without failures
every image is embedded in the same model batch as on the local engine.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.engines.ray.session import local_cpus, plan_workers, ray_session, run_pipeline
from faceembed.errors import InputFormatError


class EmbedWorker:
    """One Ray Data worker: the face model loaded once, ``embed_images`` on each chunk it is given."""

    def __init__(self, root: str | None, model: str, config: dict[str, Any], threads: int, options: dict[str, Any],
                 use_landmarks: bool):
        from faceembed.faces.embed import FaceModel

        self.model = FaceModel.from_config(model, config, threads)  # what the driver chose, never measured here
        self.root = root
        self.options = {**options, "on_error": "skip", "progress": False}  # the driver decides on errors
        self.use_landmarks = use_landmarks  # given landmarks: no detection, images without them fail

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from faceembed.faces.embed import embed_images

        rels = [str(r) for r in rows["rel"]]
        given = {r: np.asarray(json.loads(str(lm)), dtype=np.float64) for r, lm in zip(rels, rows["landmarks"],
                                                                                          strict=True) if lm}
        res = embed_images(self.root, rels, self.model, given if self.use_landmarks else None, workers=1,
                           **self.options)
        row = {r: i for i, r in enumerate(res.relpaths)}
        whole = set(res.whole)
        why = dict(res.failed)
        records = []
        for r in rels:
            if r in row:
                i = row[r]
                records.append({"rel": r, "embedding": res.embeddings[i].tolist(),
                                "sigma_sq": None if res.sigma_sq is None else res.sigma_sq[i].tolist(),
                                "landmarks": np.asarray(res.landmarks[r]).tolist() if r in res.landmarks else None,
                                "whole": r in whole})
            else:
                records.append({"rel": r, "error": why.get(r, "not embedded")})
        records.append({"seconds": res.seconds})  # one per chunk: stage times
        return {"record": np.array([json.dumps(x) for x in records], dtype=object)}


def embed_images_ray(root: str | Path | None, relpaths: Sequence[str], model: str | Path,
                     landmarks: dict[str, np.ndarray] | None = None, num_workers: int | None = None,
                     address: str | None = None, backend: str | None = None, threads: int | None = None,
                     chunk: int = 64, **options: Any) -> Any:
    """:func:`~faceembed.faces.embed.embed_images` on Ray Data; returns the same :class:`EmbedResult`
    (rows in ``relpaths`` order, ``failed`` as ``(relpath, reason)``, ``seconds`` summed over workers);
    ``options`` are :class:`~faceembed.faces.embed.EmbedOptions` fields."""
    from faceembed.faces.embed import EmbedOptions, EmbedResult, FaceModel
    from faceembed.models.registry import resolve_model

    o = EmbedOptions(**options).check()
    model = resolve_model(model)  # a built-in or imported name: its file, before it becomes an absolute path
    config = FaceModel.load(model, backend, threads).config  # resolved once (auto: measured or cached) for all
    root_s = str(Path(root).resolve()) if root is not None else None
    rows = [{"rel": r if root is not None else str(Path(r).resolve()),
             "landmarks": json.dumps(np.asarray(landmarks[r]).tolist()) if landmarks and r in landmarks else ""}
            for r in relpaths]
    back = {row["rel"]: r for row, r in zip(rows, relpaths, strict=True)}
    got: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    with ray_session(address, local_cpus() if address is None else None) as ray:
        workers, cpus, worker_threads = plan_workers(ray.cluster_resources().get("CPU", local_cpus()), num_workers,
                                                     threads)
        kwargs = {"root": root_s, "model": str(Path(model).resolve()), "config": config,
                  "threads": worker_threads, "options": dataclasses.asdict(o), "use_landmarks": landmarks is not None}
        for rec in run_pipeline(ray, rows, EmbedWorker, kwargs, workers, cpus, batch_size=chunk):
            if "seconds" in rec:
                for k, v in rec["seconds"].items():
                    seconds[k] = seconds.get(k, 0.0) + v
                continue
            rel = back[rec["rel"]]
            if "error" in rec and o.on_error == "stop":
                raise InputFormatError(f"cannot embed {rel}: {rec['error']}")
            got[rel] = rec
    ok = [r for r in relpaths if "error" not in got[r]]
    failed = [(r, got[r]["error"]) for r in relpaths if "error" in got[r]]
    emb = np.asarray([got[r]["embedding"] for r in ok], dtype=np.float32).reshape(len(ok), -1)
    sig = None
    if ok and got[ok[0]]["sigma_sq"] is not None:
        sig = np.asarray([got[r]["sigma_sq"] for r in ok], dtype=np.float32)
    marks = {r: np.asarray(got[r]["landmarks"], dtype=np.float64) for r in ok if got[r]["landmarks"] is not None}
    return EmbedResult(ok, emb, sig, failed, seconds, marks, [r for r in ok if got[r]["whole"]], config)
