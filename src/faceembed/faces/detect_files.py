"""Detect faces in image files on every core: landmarks for ``faceembed align``, a skip list, a summary.

Each worker process holds one :class:`~faceembed.faces.detect.MTCNNDetector` with one thread and detects a
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
from faceembed.faces.detect import (
    DETECT_BACKENDS,
    DetectorConfig,
    Face,
    MTCNNDetector,
    choose_face,
    resolve_detect_backend,
)
from faceembed.files import write_json, write_text
from faceembed.report.progress import progress_bar

_WORKER: dict = {}


@dataclass
class DetectResult:
    """Outcome of :func:`detect_files`: ``landmarks`` / ``boxes`` / ``scores`` / ``faces_found`` per detected
    image (keys are the given relative paths), ``all_faces``: every face found and the image's (height, width),
    ``failed``: ``(relpath, reason)``, ``backend``: the detector backend that ran (``auto`` resolved)."""

    landmarks: dict[str, np.ndarray] = field(default_factory=dict)
    boxes: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    faces_found: dict[str, int] = field(default_factory=dict)
    all_faces: dict[str, tuple[list[Face], tuple[int, int]]] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)
    no_face: set[str] = field(default_factory=set)  # of ``failed``: read, but no face found
    seconds: float = 0.0
    backend: str = ""

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


def detect_files(
    root: str | Path | None,
    relpaths: Sequence[str],
    config: DetectorConfig | None = None,
    checkpoint: str | Path | None = None,
    backend: str = "auto",
    workers: int | None = None,
    keep: Literal["largest", "center"] = "largest",
    on_error: Literal["stop", "skip"] = "skip",
    progress: bool = False,
    chunk: int = 32,
    parts: str | Path | None = None,
) -> DetectResult:
    """Detect the face in every image ``root/relpath`` (``root=None``: the paths as given) with the MTCNN
    ``backend`` (:data:`~faceembed.faces.detect.DETECT_BACKENDS`; ``auto`` is resolved once, here).

    With ``on_error="stop"`` the first unreadable image or image without a face raises
    :class:`~faceembed.errors.InputFormatError` (one line naming the file); with ``"skip"`` it is recorded in
    ``failed`` and the run goes on. With ``parts`` (a folder claimed for this run, see
    :func:`claim_parts`), every finished chunk is saved there and a rerun detects only the chunks not saved.
    """
    for name, value, choices in (("on-error", on_error, ("stop", "skip")), ("keep", keep, ("largest", "center")),
                                 ("backend", backend, DETECT_BACKENDS)):
        if value not in choices:
            raise FaceembedError(f"--{name} must be one of {', '.join(choices)}, not {value!r}")
    t0 = time.perf_counter()
    config = config or DetectorConfig()
    workers = max(1, min(workers or os.cpu_count() or 1, -(-len(relpaths) // chunk) or 1))
    # Every worker runs the same nets, in a freshly spawned process: a fork() of a process that already runs
    # OpenVINO, ONNX Runtime or Ray threads can die or hang in the child (the pool then waits for ever).
    backend = resolve_detect_backend(backend)
    from faceembed.models.mtcnn_weights import mtcnn_checkpoint

    checkpoint = mtcnn_checkpoint(checkpoint)  # convert (and export) once, before forking
    if backend != "torch":
        from faceembed.faces.detect import prepare_onnx

        prepare_onnx(checkpoint)
    root_s = str(root) if root is not None else ""
    tasks = [(root_s, list(relpaths[s:s + chunk])) for s in range(0, len(relpaths), chunk)]
    saved = _saved_parts(parts, len(tasks))
    result = DetectResult(backend=backend)
    prog, task = progress_bar(progress, len(relpaths), "detect")

    def _consume(items) -> None:
        for rel, faces, shape, reason in items:
            if not faces:
                if on_error == "stop":
                    raise InputFormatError(reason.split(": ", 1)[-1] if ": " in reason else reason,
                                           os.path.join(root_s, rel) if root_s else rel)
                result.failed.append((rel, reason))
                if shape != (0, 0):
                    result.no_face.add(rel)
            else:
                face = choose_face(faces, shape[0], shape[1], keep)
                result.all_faces[rel] = (faces, shape)
                result.landmarks[rel] = face.landmarks
                result.boxes[rel] = face.box
                result.scores[rel] = face.score
                result.faces_found[rel] = len(faces)
        prog.advance(task, len(items))

    todo = [i for i in range(len(tasks)) if i not in saved]
    with prog:
        for i in sorted(saved):
            _consume(saved[i])
        if workers == 1 or len(todo) <= 1:
            if todo:
                _init_worker(checkpoint, config, backend)
            for i in todo:
                _consume(_save_part(parts, i, _detect_chunk(tasks[i])))
        else:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(workers, _init_worker, (checkpoint, config, backend)) as pool:
                for i, items in zip(todo, pool.imap(_detect_chunk, [tasks[i] for i in todo]), strict=True):
                    _consume(_save_part(parts, i, items))
    order = {r: i for i, r in enumerate(relpaths)}
    result.landmarks = dict(sorted(result.landmarks.items(), key=lambda kv: order[kv[0]]))
    result.failed.sort(key=lambda kv: order[kv[0]])
    result.seconds = time.perf_counter() - t0
    return result


def claim_parts(out: str | Path, root: str | Path | None, relpaths: Sequence[str], config: DetectorConfig,
                keep: str, backend: str, overwrite: bool = False) -> Path:
    """The folder ``OUT.parts`` where a ``detect`` run into ``out`` saves its finished chunks, claimed for this
    run (:mod:`faceembed.fingerprint`): a rerun of the same resumes, a run with other images or settings is
    refused unless ``overwrite``."""
    import dataclasses

    from faceembed.fingerprint import claim_folder, inputs_digest

    out = Path(out)
    parts = out.with_name(out.name + ".parts")
    images = (Path(root) / r if root is not None else Path(r) for r in relpaths)
    claim_folder(parts, {"command": "detect", "config": dataclasses.asdict(config), "keep": keep, "backend": backend,
                         "images": inputs_digest(images)}, overwrite)
    return parts


def _part_path(parts: str | Path, i: int) -> Path:
    return Path(parts) / f"chunk_{i:06d}.json"


def _save_part(parts: str | Path | None, i: int, items: list) -> list:
    if parts is not None:
        write_json(_part_path(parts, i), [[rel, [[f.box.tolist(), f.score, f.landmarks.tolist()] for f in faces],
                                           list(shape), reason] for rel, faces, shape, reason in items])
    return items


def _saved_parts(parts: str | Path | None, n: int) -> dict[int, list]:
    """The chunks an earlier run of the same detection saved (float32 values come back exactly)."""
    import json

    saved: dict[int, list] = {}
    for i in range(n) if parts is not None else ():
        path = _part_path(parts, i)
        if path.is_file():
            rows = json.loads(path.read_text(encoding="utf-8"))
            saved[i] = [(rel, [Face(np.asarray(b, np.float32), float(s), np.asarray(lm, np.float32))
                               for b, s, lm in faces], tuple(shape), reason) for rel, faces, shape, reason in rows]
    return saved


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
               "backend": result.backend or None,
               "several_faces": sum(1 for n in result.faces_found.values() if n > 1),
               "seconds": round(result.seconds, 2),
               "images_per_s": round(result.images / result.seconds, 1) if result.seconds > 0 else None,
               "landmarks": str(out), "skipped_list": str(skipped) if result.failed else None}
    write_json(out.with_suffix(".json"), {
        **summary,
        "faces": {r: {"box": [round(float(v), 2) for v in result.boxes[r]], "score": round(result.scores[r], 5),
                      "faces_found": result.faces_found[r]} for r in result.landmarks}})
    return summary
