"""Photos to embeddings with the stages overlapped: decode -> detect (MTCNN) -> align -> embed.

``workers`` processes (one per core by default, forked once) each take a chunk of photos through every stage
on one thread: decode (large JPEGs at a reduced size, :func:`decode_photo`), MTCNN on the whole chunk (P-Net
per shared photo size, R-Net and O-Net crops of the chunk in shared batches), the face ``keep`` says aligned
onto the model card's template, the chunk's faces embedded in one batch with the model's configuration
(``FaceModel.config``). While one chunk embeds, the other worker detects: the stages overlap across processes
and no core is oversubscribed (an embedder with its own threads beside the detectors ran several times slower
per face on 2 cores). At most ``2 * workers`` chunks are in flight, so memory stays bounded whatever the number of
photos. With ``workers=1`` it all runs in this process, the next chunk decoded by a thread meanwhile.

Per photo it computes what the one-photo-at-a-time path computes (the same decode, detector, face choice and
warp; tested), so boxes, landmarks and crops are identical, and embeddings differ only by the batch they ran in.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceembed.errors import FaceembedError, InputFormatError
from faceembed.faces.nms import MIN_FACE_FRACTION

#: A JPEG whose longer side is at least twice this is decoded at 1/2, 1/4 or 1/8 size (libjpeg's DCT scaling),
#: never below it: face_recognition's detector shrinks photos to 1,600 px too.
MAX_SIDE = 1600
_WORKER: dict = {}


@dataclass(frozen=True)
class PhotoOptions:
    """What the pipeline does per photo: the face to ``keep`` (largest | center), ``no_face`` skip | whole,
    ``detector`` mtcnn | none, MTCNN's ``min_face_size``, ``min_face_fraction`` (:mod:`faceembed.faces.detect`)
    and ``detector_backend``, ``max_side`` for reduced JPEG decoding (0: always full size)."""

    keep: str = "largest"
    no_face: str = "skip"
    detector: str = "mtcnn"
    min_face_size: float = 40.0
    min_face_fraction: float = MIN_FACE_FRACTION
    detector_backend: str = "auto"
    max_side: int = MAX_SIDE


@dataclass
class PhotoFace:
    """One photo's outcome: the kept face (``crop`` aligned, ``box``, ``score``, ``landmarks`` in the photo's
    full-size pixels, ``faces`` found) or ``reason`` (unreadable, no face); ``whole``: the photo used whole."""

    rel: str
    crop: np.ndarray | None = None
    box: np.ndarray | None = None
    score: float = 0.0
    landmarks: np.ndarray | None = None
    faces: list = field(default_factory=list)
    reason: str = ""
    whole: bool = False
    shape: tuple[int, int] = (0, 0)

    @property
    def ok(self) -> bool:
        """Whether the photo gave a face to embed (its crop may be dropped once embedded)."""
        return not self.reason


def decode_photo(path: str | Path, max_side: int = MAX_SIDE) -> tuple[np.ndarray, float]:
    """``(uint8 RGB pixels, scale)``: a JPEG at least ``2 * max_side`` on its longer side is decoded by libjpeg at
    the largest reduction (1/2, 1/4, 1/8) that keeps that side >= ``max_side`` (``scale`` = decoded / full size,
    EXIF orientation applied); every other photo is :func:`~faceembed.data.images.read_image_rgb` (scale 1)."""
    from faceembed.data.images import read_image_rgb

    if max_side > 0:
        reduced = _reduced_jpeg(Path(path), max_side)
        if reduced is not None:
            return reduced
    return read_image_rgb(path), 1.0


def _reduced_jpeg(path: Path, max_side: int) -> tuple[np.ndarray, float] | None:
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            if im.format != "JPEG" or im.mode not in ("RGB", "L") or max(im.size) < 2 * max_side:
                return None
            full = max(im.size)
            reduce = max(r for r in (2, 4, 8) if full / r >= max_side)
            im.draft("RGB", (im.size[0] // reduce, im.size[1] // reduce))
            upright = ImageOps.exif_transpose(im.convert("RGB"))
            return np.ascontiguousarray(np.asarray(upright)), max(upright.size) / full
    except (OSError, ValueError):
        return None  # let the full reader name what is wrong with the file


def _init_worker(config, backend: str, model, model_spec: tuple) -> None:
    import copy

    from faceembed.faces.detect import MTCNNDetector
    from faceembed.inference.backends import load_backend

    file, model_backend, precision = model_spec
    _WORKER["det"] = MTCNNDetector(None, config, backend=backend, threads=1)
    _WORKER["model"] = copy.copy(model)  # the parent's model (card, config) with this process's own runtime
    _WORKER["model"].backend = load_backend(file, model_backend, precision, threads=1)


def photo_faces(det, images: Sequence[tuple[str, np.ndarray | None, float, str]], size: tuple[int, int],
                template: str | None, o: PhotoOptions) -> tuple[list[PhotoFace], dict[str, float]]:
    """Detect (one batched MTCNN call for all ``images``), choose and align the face of every decoded photo
    ``(rel, pixels or None, scale, reason)``; returns the outcomes and the seconds of each stage."""
    from faceembed.faces.align import WHOLE_IMAGE, align_face
    from faceembed.faces.detect import choose_face

    t0 = time.perf_counter()
    ok = [k for k, (_, img, _, _) in enumerate(images) if img is not None]
    found = det.detect_many([images[k][1] for k in ok]) if o.detector == "mtcnn" else [[] for _ in ok]
    faces_of = dict(zip(ok, found, strict=True))
    t1 = time.perf_counter()
    out = []
    for k, (rel, img, scale, reason) in enumerate(images):
        if img is None:
            out.append(PhotoFace(rel, reason=reason))
            continue
        h, w = img.shape[:2]
        full = (round(h / scale), round(w / scale))
        faces = faces_of[k]
        if not faces:
            if o.detector == "none" or o.no_face == "whole":
                out.append(PhotoFace(rel, align_face(img, WHOLE_IMAGE, size, template=template), whole=True,
                                     shape=full))
            else:
                out.append(PhotoFace(rel, reason="no face found", shape=full))
            continue
        face = choose_face(faces, h, w, o.keep)
        try:
            crop = align_face(img, face.landmarks, size, template=template)
        except FaceembedError as exc:  # degenerate landmarks: this photo is left out, not the run
            out.append(PhotoFace(rel, reason=exc.one_line(), shape=full))
            continue
        out.append(PhotoFace(rel, crop, face.box / scale, face.score, face.landmarks / scale, faces, shape=full))
    return out, {"detect": t1 - t0, "align": time.perf_counter() - t1}


def _read(root: str, rel: str, max_side: int) -> tuple[str, np.ndarray | None, float, str]:
    try:
        img, scale = decode_photo(os.path.join(root, rel) if root else rel, max_side)
        return rel, img, scale, ""
    except FaceembedError as exc:
        return rel, None, 1.0, exc.one_line()


def embed_chunk(model, faces: list[PhotoFace], batch: int, keep_crops: bool = True) -> tuple:
    """``(embeddings, sigma_sq or None, seconds)`` of the chunk's aligned faces, in order; without ``keep_crops``
    the crops are dropped once embedded (what a worker sends back stays small)."""
    crops = [f.crop for f in faces if f.crop is not None]
    if not crops:
        return np.zeros((0, model.card.embedding_size), np.float32), None, 0.0
    t = time.perf_counter()
    emb, sig = model.embed(np.stack(crops), batch=batch)
    if not keep_crops:
        for f in faces:
            f.crop = None
    return emb, sig, time.perf_counter() - t


def _chunk_in_worker(args: tuple) -> tuple:
    root, rels, size, template, o, batch = args
    t0 = time.perf_counter()
    images = [_read(root, r, o.max_side) for r in rels]
    t1 = time.perf_counter()
    faces, seconds = photo_faces(_WORKER["det"], images, size, template, o)
    emb, sig, embed_s = embed_chunk(_WORKER["model"], faces, batch, keep_crops=False)
    return faces, emb, sig, {"decode": t1 - t0, **seconds, "embed": embed_s}


def _chunks_here(det, model, root: str, tasks: list[list[str]], size, template, o: PhotoOptions, batch: int):
    """The chunks in this process, each decoded by a thread while the previous one is detected and embedded."""
    def read(rels: list[str]) -> list:
        return [_read(root, r, o.max_side) for r in rels]

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(read, tasks[0]) if tasks else None
        for i in range(len(tasks)):
            t0 = time.perf_counter()
            images = pending.result()
            waited = time.perf_counter() - t0
            if i + 1 < len(tasks):
                pending = pool.submit(read, tasks[i + 1])
            faces, seconds = photo_faces(det, images, size, template, o)
            emb, sig, embed_s = embed_chunk(model, faces, batch)
            yield faces, emb, sig, {"decode": waited, **seconds, "embed": embed_s}


def _chunks_in_workers(workers: int, model, root: str, tasks: list[list[str]], size, template, o: PhotoOptions,
                       batch: int):
    """The chunks on ``workers`` forked processes (each: decode, detect, align, embed on one thread), in order,
    at most ``2 * workers`` in flight."""
    import multiprocessing as mp

    from faceembed.faces.detect import DetectorConfig

    config = DetectorConfig(min_face_size=o.min_face_size, min_face_fraction=o.min_face_fraction)
    cfg = model.config
    spec = (cfg.get("file", model.path), cfg.get("backend", "torch"), cfg.get("precision"))
    with mp.get_context("fork").Pool(workers, _init_worker, (config, o.detector_backend, model, spec)) as pool:
        def submit(t: list[str]):
            return pool.apply_async(_chunk_in_worker, ((root, t, size, template, o, batch),))

        inflight = [submit(t) for t in tasks[:2 * workers]]
        for i in range(len(tasks)):
            result = inflight[i].get()
            if i + 2 * workers < len(tasks):
                inflight.append(submit(tasks[i + 2 * workers]))
            inflight[i] = None  # drop the finished chunk's result
            yield result


@dataclass
class PipelineResult:
    """Every photo's :class:`PhotoFace` in input order (``embedding`` / ``sigma_sq`` rows for those with a
    crop, in order), the busy ``seconds`` of each stage summed over workers, and the ``wall`` time."""

    photos: list[PhotoFace]
    embeddings: np.ndarray
    sigma_sq: np.ndarray | None
    seconds: dict[str, float]
    wall: float


def run_pipeline(root: str | Path | None, relpaths: Sequence[str], model, options: PhotoOptions | None = None,
                 workers: int | None = None, chunk: int = 32, embed_batch: int = 64, progress: bool = False,
                 detector=None) -> PipelineResult:
    """Decode, detect, align and embed ``root/relpath`` for every relpath with the stages overlapped (module
    doc); ``model`` is a :class:`~faceembed.faces.embed.FaceModel`; ``detector``: a warm MTCNN to use in this
    process (then ``workers`` is 1)."""
    from faceembed.faces.detect import DetectorConfig, MTCNNDetector
    from faceembed.report.progress import progress_bar

    o = options or PhotoOptions()
    t_start = time.perf_counter()
    root_s = str(root) if root is not None else ""
    c = model.card
    size, template = (c.height, c.width), c.template
    tasks = [list(relpaths[s:s + chunk]) for s in range(0, len(relpaths), chunk)]
    workers = 1 if detector is not None else max(1, min(workers or os.cpu_count() or 1, len(tasks) or 1))
    if workers == 1:
        config = DetectorConfig(min_face_size=o.min_face_size, min_face_fraction=o.min_face_fraction)
        det = detector or MTCNNDetector(None, config, backend=o.detector_backend, threads=1)
        chunks = _chunks_here(det, model, root_s, tasks, size, template, o, embed_batch)
    else:
        from faceembed.models.mtcnn_weights import mtcnn_checkpoint

        if o.detector_backend != "torch":
            from faceembed.faces.detect import prepare_onnx

            prepare_onnx(mtcnn_checkpoint(None))  # convert and export once, before forking
        chunks = _chunks_in_workers(workers, model, root_s, tasks, size, template, o, embed_batch)
    seconds = {"decode": 0.0, "detect": 0.0, "align": 0.0, "embed": 0.0}
    photos: list[PhotoFace] = []
    embs: list[np.ndarray] = []
    sigs: list[np.ndarray] = []
    prog, task = progress_bar(progress, len(relpaths), "photos")
    with prog:
        for faces, emb, sig, secs in chunks:
            for k, v in secs.items():
                seconds[k] += v
            photos += faces
            embs.append(emb)
            if sig is not None:
                sigs.append(sig)
            prog.advance(task, len(faces))
    emb = np.concatenate(embs) if embs else np.zeros((0, c.embedding_size), np.float32)
    return PipelineResult(photos, emb, np.concatenate(sigs) if sigs else None, seconds,
                          time.perf_counter() - t_start)


def failure(photo: PhotoFace, root: str | Path | None) -> str:
    """The one-line reason a photo gave no face, naming the file as ``detect`` does."""
    if photo.reason == "no face found":
        return f"{Path(root, photo.rel) if root else Path(photo.rel)}: no face found"
    return photo.reason


def check_stop(photos: Sequence[PhotoFace], root: str | Path | None) -> None:
    """``on_error="stop"``: the first photo without a face (or unreadable) raises, naming the file."""
    for p in photos:
        if not p.ok:
            where = os.path.join(str(root), p.rel) if root else p.rel
            raise InputFormatError(p.reason.split(": ", 1)[-1] if ": " in p.reason else p.reason, where)
