"""Embed photos: detect (MTCNN) -> align (5-point similarity) -> run a face model, for image folders.

Used by ``faceembed enroll``, ``identify``, ``evaluate-identification`` and ``compare``. The model is any file
with a model card (a faceembed checkpoint or export, or a model brought in with ``faceembed import``): the card
says the crop (size, alignment template), the preprocessing (colour, layout, mean / std), the batch and which
output is the embedding (``mu`` and ``sigma_sq`` for PFE models). Photos that are already face crops are used
whole (``detector="none"``), and so, with ``no_face="whole"``, are photos where MTCNN finds no face.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceembed.data.preprocess import preprocess
from faceembed.errors import FaceembedError, InputFormatError
from faceembed.faces.nms import MIN_FACE_FRACTION
from faceembed.models.card import ModelCard

if TYPE_CHECKING:
    from faceembed.faces.detect import DetectorConfig


@dataclass
class FaceModel:
    """A loaded face model: its ``backend`` (see :mod:`faceembed.inference.backends`) and its model ``card``
    (input size, layout, colour, normalisation, alignment template, batch, output roles)."""

    path: Path
    backend: object
    card: ModelCard
    config: dict = field(default_factory=dict)  # how it runs: file, backend, precision (and why: ``source``)

    @classmethod
    def load(cls, path: str | Path, backend: str | None = None, threads: int | None = None) -> FaceModel:
        """Open ``path``. ``backend`` None or ``"auto"``: the fastest accurate (file, backend, precision) that
        :func:`~faceembed.inference.autoselect.choose_model_config` measured for this file on this machine
        (cached; a checkpoint may run as its cached ONNX twin); a backend name runs the file as given.
        ``$FACEEMBED_PHOTO_BACKEND`` overrides None: a backend name, or ``fp32`` (the file's own kind in fp32:
        PyTorch for a checkpoint, ONNX Runtime for ONNX), e.g. to compare two models' embeddings exactly."""
        from faceembed.inference.backends import load_backend
        from faceembed.models.card_io import read_card
        from faceembed.models.registry import resolve_model

        path = resolve_model(path)
        card = read_card(path)
        backend = backend or photo_backend(path)
        if backend not in (None, "auto"):
            return cls(path, load_backend(path, backend, threads=threads), card,
                       {"file": str(path), "backend": backend, "source": "given"})
        from faceembed.inference.autoselect import choose_model_config

        config = choose_model_config(path, threads, lambda: _sample_faces(card))
        return cls.from_config(path, config, threads, card)

    @classmethod
    def from_config(cls, path: str | Path, config: dict, threads: int | None = None,
                    card: ModelCard | None = None) -> FaceModel:
        """Open ``path`` as ``config`` says (``file``, ``backend``, ``precision``: another process's
        :attr:`config`), so that workers run exactly what the driver chose."""
        from faceembed.inference.backends import load_backend
        from faceembed.models.card_io import read_card

        run = _LazyBackend(lambda: load_backend(config["file"], config["backend"], config.get("precision"), threads))
        kept = {k: config[k] for k in ("file", "backend", "precision", "ms_per_image", "source") if k in config}
        return cls(Path(path), run, card or read_card(path), kept)

    @property
    def size(self) -> tuple[int, int]:
        """The aligned face's (height, width)."""
        return self.card.height, self.card.width

    def uncertainty(self, sigma_sq: np.ndarray | None) -> np.ndarray | None:
        """Per-face uncertainty (N,): the harmonic mean of each face's sigma^2 (PFE models), else None."""
        from faceembed.faces.quality import uncertainties

        return uncertainties(self.card, sigma_sq)

    def quality(self, sigma_sq: np.ndarray | None) -> np.ndarray | None:
        """Per-face quality (N,) in (0, 1], ``u_ref / (u_ref + u)`` with the card's ``quality.u_ref`` (0.5: the
        median validation face); None for a model whose card has no quality reference."""
        from faceembed.faces.quality import qualities

        return qualities(self.card, sigma_sq)

    def embed(self, faces: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        """Aligned uint8 RGB faces ``[N, H, W, 3]`` -> ``(embeddings [N, D], sigma_sq [N, D] or None)``, in chunks
        of ``batch`` (a fixed-batch graph is run in its own batch by the backend)."""
        c = self.card
        if faces.ndim != 4 or faces.shape[1:3] != (c.height, c.width):
            raise InputFormatError(f"faces are {'x'.join(map(str, faces.shape[1:3]))} but the model takes "
                                   f"{c.height}x{c.width}", self.path)
        names = list(self.backend.output_names)
        emb_i = names.index(c.embedding_output)
        sig_name = c.output("sigma_sq")
        sig_i = names.index(sig_name) if sig_name in names else None
        embs, sigs = [], []
        for i in range(0, len(faces), batch):
            x = preprocess(faces[i:i + batch], c)
            n = len(x)
            outs = self.backend.run(x)
            embs.append(np.asarray(outs[emb_i])[:n].reshape(n, -1))
            if sig_i is not None:
                sigs.append(np.asarray(outs[sig_i])[:n].reshape(n, -1))
        if not embs:
            return np.zeros((0, c.embedding_size), np.float32), None
        return np.concatenate(embs).astype(np.float32), (np.concatenate(sigs).astype(np.float32) if sigs else None)


def photo_backend(path: Path) -> str | None:
    """The backend ``$FACEEMBED_PHOTO_BACKEND`` asks for (``fp32``: the file kind's reference backend), or None
    (the measured fastest accurate configuration)."""
    from faceembed.inference.backends import BACKENDS, default_backend

    wanted = os.environ.get("FACEEMBED_PHOTO_BACKEND", "").strip()
    if not wanted or wanted == "auto":
        return None
    if wanted == "fp32":
        return default_backend(path)
    if wanted not in BACKENDS:
        raise FaceembedError(f"FACEEMBED_PHOTO_BACKEND must be auto, fp32 or one of {', '.join(BACKENDS)}, not "
                             f"{wanted!r}")
    return wanted


class _LazyBackend:
    """A backend opened on first use: the overlapped pipeline's parent never runs the model (its workers open
    their own), so it skips the compile."""

    def __init__(self, open_backend):
        self._open, self._backend = open_backend, None

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if self._backend is None:
            self._backend = self._open()
        return getattr(self._backend, name)


def _sample_faces(card: ModelCard, n: int = 16) -> np.ndarray:
    """Rows to time and check candidate backends on: smooth pseudo-random crops of the card's size, preprocessed
    per the card (fixed seed: the same rows on every machine)."""
    import cv2

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    faces = np.stack([cv2.resize(s, (card.width, card.height), interpolation=cv2.INTER_CUBIC) for s in small])
    return preprocess(faces if card.channels == 3 else faces[..., :1], card)


@dataclass
class EmbedResult:
    """Embeddings of the images that went through (``relpaths`` rows), and ``failed`` ``(relpath, reason)``;
    ``seconds`` per stage (detect, align, embed)."""

    relpaths: list[str]
    embeddings: np.ndarray
    sigma_sq: np.ndarray | None
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)
    whole: list[str] = field(default_factory=list)  # photos used whole (no detector, or no face found)
    config: dict = field(default_factory=dict)  # the model's run configuration (FaceModel.config)


@dataclass(frozen=True)
class EmbedOptions:
    """How photos are embedded, the same for the local and the Ray engine: which face to ``keep`` when a photo
    has several (largest | center), ``on_error`` skip | stop, MTCNN's smallest face (``min_face_size`` px or
    ``min_face_fraction`` of the shorter side, whichever is larger) and runtime (``detector_backend`` auto |
    ort+openvino | openvino | ort | torch, see :mod:`faceembed.faces.detect`), progress bars."""

    keep: str = "largest"
    on_error: str = "skip"
    min_face_size: float = 40.0
    min_face_fraction: float = MIN_FACE_FRACTION
    detector_backend: str = "auto"
    progress: bool = False
    detector: str = "mtcnn"  # none: every photo is already a face crop, used whole
    no_face: str = "skip"  # whole: a photo where MTCNN finds no face is used whole instead of being lost

    def detector_config(self) -> DetectorConfig:
        """MTCNN's settings for these options."""
        from faceembed.faces.detect import DetectorConfig

        return DetectorConfig(min_face_size=self.min_face_size, min_face_fraction=self.min_face_fraction)

    def check(self) -> EmbedOptions:
        """One clear error for a bad choice."""
        from faceembed.faces.detect import DETECT_BACKENDS, check_face_size

        check_face_size(self.min_face_size, self.min_face_fraction)
        for name, value, choices in (("keep", self.keep, ("largest", "center")),
                                     ("on-error", self.on_error, ("skip", "stop")),
                                     ("detector-backend", self.detector_backend, DETECT_BACKENDS),
                                     ("detector", self.detector, ("mtcnn", "none")),
                                     ("no-face", self.no_face, ("skip", "whole"))):
            if value not in choices:
                raise FaceembedError(f"--{name} must be one of {', '.join(choices)}, not {value!r}")
        return self


def embed_images(root: str | Path | None, relpaths: Sequence[str], model: FaceModel,
                 landmarks: dict[str, np.ndarray] | None = None, workers: int | None = None,
                 **options: Any) -> EmbedResult:
    """Detect (unless ``landmarks`` are given), align and embed ``root/relpath`` for every relpath;
    ``options`` are :class:`EmbedOptions` fields.

    Images without a face or unreadable ones are skipped (``failed``) or, with ``on_error="stop"``, raise.
    """
    o = EmbedOptions(**options).check()
    if landmarks is None and o.detector == "mtcnn":
        return _embed_overlapped(root, relpaths, model, workers, o)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    landmarks, failed, whole = find_faces(root, relpaths, landmarks, workers, o)
    seconds["detect"] = time.perf_counter() - t
    ok = [r for r in relpaths if r in landmarks]
    t = time.perf_counter()
    faces = align_for_card(root, landmarks, ok, model.card, workers, o.on_error, failed)
    ok = [r for r in ok if r not in {f for f, _ in failed}]
    seconds["align"] = time.perf_counter() - t
    t = time.perf_counter()
    emb, sig = model.embed(faces) if len(faces) else (np.zeros((0, model.card.embedding_size), np.float32), None)
    seconds["embed"] = time.perf_counter() - t
    marks = {r: landmarks[r] for r in ok if not isinstance(landmarks[r], str)}
    return EmbedResult(ok, emb, sig, failed, seconds, marks, [r for r in whole if r in set(ok)], model.config)


def _embed_overlapped(root: str | Path | None, relpaths: Sequence[str], model: FaceModel, workers: int | None,
                      o: EmbedOptions) -> EmbedResult:
    """:func:`embed_images` through :func:`faceembed.faces.pipeline.run_pipeline` (decode, detect, align and
    embed overlapped on every core); the same photos, landmarks and crops as the stage-by-stage path."""
    from faceembed.faces.pipeline import PhotoOptions, check_stop, failure, run_pipeline

    po = PhotoOptions(keep=o.keep, no_face=o.no_face, min_face_size=o.min_face_size,
                      min_face_fraction=o.min_face_fraction, detector_backend=o.detector_backend)
    res = run_pipeline(root, relpaths, model, po, workers, progress=o.progress)
    if o.on_error == "stop":
        check_stop(res.photos, root)
    kept = [p for p in res.photos if p.ok]
    failed = [(p.rel, failure(p, root)) for p in res.photos if not p.ok]
    marks = {p.rel: p.landmarks for p in kept if p.landmarks is not None}
    seconds = {**res.seconds, "wall": res.wall}
    return EmbedResult([p.rel for p in kept], res.embeddings, res.sigma_sq, failed, seconds, marks,
                       [p.rel for p in kept if p.whole], model.config)


def find_faces(root: str | Path | None, relpaths: Sequence[str], landmarks: dict | None, workers: int | None,
               o: EmbedOptions) -> tuple[dict, list[tuple[str, str]], list[str]]:
    """The faces of photos: (landmarks per photo, :data:`~faceembed.faces.align.WHOLE_IMAGE` for photos used
    whole; ``(relpath, reason)`` of the photos left out; the photos used whole). ``landmarks`` given: used as
    they are; else MTCNN detects (``o.detector == "mtcnn"``) or every photo is a face crop (``"none"``)."""
    from faceembed.faces.align import WHOLE_IMAGE
    from faceembed.faces.detect_files import detect_files

    if landmarks is None and o.detector == "none":
        return {r: WHOLE_IMAGE for r in relpaths}, [], list(relpaths)
    failed: list[tuple[str, str]] = []
    whole: list[str] = []
    if landmarks is None:
        det = detect_files(root, relpaths, o.detector_config(),
                           backend=o.detector_backend,
                           workers=workers, keep=o.keep,
                           on_error="skip" if o.no_face == "whole" else o.on_error, progress=o.progress)
        landmarks = dict(det.landmarks)
        for rel, reason in det.failed:
            if o.no_face == "whole" and rel in det.no_face:
                landmarks[rel] = WHOLE_IMAGE
                whole.append(rel)
            elif o.on_error == "stop":
                raise InputFormatError(reason)
            else:
                failed.append((rel, reason))
    missing = [r for r in relpaths if r not in landmarks and r not in {f for f, _ in failed}]
    if missing and o.on_error == "stop":
        raise InputFormatError("no landmarks for this image", os.path.join(str(root or ""), missing[0]))
    return landmarks, failed + [(r, "no landmarks") for r in missing], whole


def align_for_card(root, landmarks: dict, rels: list[str], card: ModelCard, workers: int | None,
                   on_error: str, failed: list[tuple[str, str]]) -> np.ndarray:
    """The faces of ``rels`` aligned onto the card's crop and template; with ``on_error="skip"`` an unreadable
    photo is appended to ``failed`` (found by redoing its chunk one photo at a time) instead of raising."""
    from faceembed.faces.align_files import align_images_in_memory as align

    h, w = card.height, card.width
    kw = {"size": (h, w), "template": card.template, "progress": False}
    if not rels:
        return np.zeros((0, h, w, 3), np.uint8)
    try:
        return align(root if root is not None else "", landmarks, rels, workers=workers, **kw)
    except FaceembedError:
        if on_error == "stop":
            raise
    kept = []
    for rel in rels:
        try:
            kept.append(align(root if root is not None else "", landmarks, [rel], workers=1, **kw))
        except FaceembedError as exc:
            failed.append((rel, exc.one_line()))
    return np.concatenate(kept) if kept else np.zeros((0, h, w, 3), np.uint8)
