"""Detect faces in image files on every core: landmarks for ``faceembed align``, a skip list, a summary.

Each worker process holds one :class:`~faceembed.runtime.detect.MTCNNDetector` with one thread and detects a
chunk of images at a time (R-Net / O-Net crops of the whole chunk batched). Per image exactly one of: a face
(the one ``keep`` picks when there are several), or a one-line reason (unreadable file, no face found).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from faceembed.data.images import read_image_rgb
from faceembed.errors import FaceembedError, InputFormatError
from faceembed.files import write_json, write_text
from faceembed.runtime.detect import DetectorConfig, Face, MTCNNDetector, choose_face

_WORKER: dict = {}


@dataclass
class DetectResult:
    """Outcome of :func:`detect_files`: ``landmarks`` / ``boxes`` / ``scores`` / ``faces_found`` per detected
    image (keys are the given relative paths), ``all_faces``: every face found and the image's (height, width),
    ``failed``: ``(relpath, reason)``."""

    landmarks: dict[str, np.ndarray] = field(default_factory=dict)
    boxes: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    faces_found: dict[str, int] = field(default_factory=dict)
    all_faces: dict[str, tuple[list[Face], tuple[int, int]]] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images(self) -> int:
        return len(self.landmarks) + len(self.failed)


def _init_worker(checkpoint, config, backend) -> None:
    _WORKER["det"] = MTCNNDetector(checkpoint, config, backend=backend, threads=1)


def _detect_chunk(args: tuple) -> list[tuple[str, list[Face], tuple[int, int], str]]:
    root, rels = args
    det: MTCNNDetector = _WORKER["det"]
    images, names, out = [], [], []
    for rel in rels:
        try:
            images.append(read_image_rgb(os.path.join(root, rel) if root else rel))
            names.append(rel)
        except FaceembedError as exc:
            out.append((rel, [], (0, 0), exc.one_line()))
    for rel, img, faces in zip(names, images, det.detect_many(images), strict=True):
        reason = "" if faces else f"{Path(root, rel) if root else Path(rel)}: no face found"
        out.append((rel, faces, img.shape[:2], reason))
    return out


def _progress(enabled: bool, total: int, label: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    prog = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not enabled, transient=False)
    return prog, prog.add_task(label, total=total)


def detect_files(
    root: str | Path | None,
    relpaths: Sequence[str],
    config: DetectorConfig | None = None,
    checkpoint: str | Path | None = None,
    backend: str = "ort",
    workers: int | None = None,
    keep: Literal["largest", "center"] = "largest",
    on_error: Literal["stop", "skip"] = "skip",
    progress: bool = False,
    chunk: int = 32,
) -> DetectResult:
    """Detect the face in every image ``root/relpath`` (``root=None``: the paths as given).

    With ``on_error="stop"`` the first unreadable image or image without a face raises
    :class:`~faceembed.errors.InputFormatError` (one line naming the file); with ``"skip"`` it is recorded in
    ``failed`` and the run goes on.
    """
    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
    if keep not in ("largest", "center"):
        raise ValueError(f"keep must be 'largest' or 'center', got {keep!r}")
    t0 = time.perf_counter()
    config = config or DetectorConfig()
    workers = max(1, min(workers or os.cpu_count() or 1, -(-len(relpaths) // chunk) or 1))
    from faceembed.models.mtcnn_weights import mtcnn_checkpoint

    checkpoint = mtcnn_checkpoint(checkpoint)  # convert (and export) once, before forking
    if backend == "ort":
        from faceembed.runtime.detect import prepare_onnx

        prepare_onnx(checkpoint)
    root_s = str(root) if root is not None else ""
    tasks = [(root_s, list(relpaths[s:s + chunk])) for s in range(0, len(relpaths), chunk)]
    result = DetectResult()
    prog, task = _progress(progress, len(relpaths), "detect")

    def _consume(items) -> None:
        for rel, faces, shape, reason in items:
            if not faces:
                if on_error == "stop":
                    raise InputFormatError(reason.split(": ", 1)[-1] if ": " in reason else reason,
                                           os.path.join(root_s, rel) if root_s else rel)
                result.failed.append((rel, reason))
            else:
                face = choose_face(faces, shape[0], shape[1], keep)
                result.all_faces[rel] = (faces, shape)
                result.landmarks[rel] = face.landmarks
                result.boxes[rel] = face.box
                result.scores[rel] = face.score
                result.faces_found[rel] = len(faces)
        prog.advance(task, len(items))

    with prog:
        if workers == 1:
            _init_worker(checkpoint, config, backend)
            for t in tasks:
                _consume(_detect_chunk(t))
        else:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(workers, _init_worker, (checkpoint, config, backend)) as pool:
                for items in pool.imap(_detect_chunk, tasks):
                    _consume(items)
    order = {r: i for i, r in enumerate(relpaths)}
    result.landmarks = dict(sorted(result.landmarks.items(), key=lambda kv: order[kv[0]]))
    result.failed.sort(key=lambda kv: order[kv[0]])
    result.seconds = time.perf_counter() - t0
    return result


def skip_list_path(out: str | Path) -> Path:
    """Where :func:`write_detections` puts the skip list: ``NAME.skipped.txt`` beside ``out``."""
    out = Path(out)
    return out.with_name(out.stem + ".skipped.txt")


def write_detections(out: str | Path, result: DetectResult, fmt: str = "xxyy") -> dict:
    """Write the landmark file (``read_landmarks`` reads it), the skip list beside it when anything failed
    (``relpath<TAB>reason``), and ``NAME.json`` (boxes, scores, faces per image, counts). Returns the summary."""
    from faceembed.data.lfw import write_landmarks

    out = Path(out)
    write_landmarks(out, result.landmarks, fmt)  # type: ignore[arg-type]
    skipped = skip_list_path(out)
    if result.failed:
        write_text(skipped, "".join(f"{r}\t{why}\n" for r, why in result.failed))
    elif skipped.exists():
        skipped.unlink()
    summary = {"images": result.images, "detected": len(result.landmarks), "failed": len(result.failed),
               "several_faces": sum(1 for n in result.faces_found.values() if n > 1),
               "seconds": round(result.seconds, 2),
               "images_per_s": round(result.images / result.seconds, 1) if result.seconds > 0 else None,
               "landmarks": str(out), "skipped_list": str(skipped) if result.failed else None}
    write_json(out.with_suffix(".json"), {
        **summary,
        "faces": {r: {"box": [round(float(v), 2) for v in result.boxes[r]], "score": round(result.scores[r], 5),
                      "faces_found": result.faces_found[r]} for r in result.landmarks}})
    return summary


def compare_to_reference(landmarks: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                         relpaths: Sequence[str] | None = None) -> dict:
    """Detected vs reference landmarks on the images both have: mean / median / p95 of the per-face mean point
    distance divided by the reference inter-ocular distance, mean pixel distance, and the detection rate
    over ``relpaths`` (default: the reference's images)."""
    from faceembed.runtime.nms import mean_normalised_distance

    common = [r for r in landmarks if r in reference]
    if not common:
        raise InputFormatError("no image is in both the detections and the reference landmarks")
    pred = np.stack([landmarks[r] for r in common])
    ref = np.stack([reference[r] for r in common])
    d = mean_normalised_distance(pred, ref)
    px = np.hypot(*(pred.astype(np.float64) - ref).transpose(2, 0, 1)).mean(axis=1)
    universe = list(relpaths) if relpaths is not None else list(reference)
    return {"compared": len(common), "mean_normalised_distance": float(d.mean()),
            "median_normalised_distance": float(np.median(d)), "p95_normalised_distance": float(np.quantile(d, 0.95)),
            "faces_over_0.1": int((d > 0.1).sum()), "mean_pixel_distance": float(px.mean()),
            "detection_rate": sum(1 for r in universe if r in landmarks) / max(1, len(universe))}
