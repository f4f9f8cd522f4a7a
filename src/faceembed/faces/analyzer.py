"""The Python API's face pipeline: photos (files or arrays) -> faces (box, score, landmarks, embedding,
uncertainty, quality) -> 1:1 decisions at a false-accept rate. ``FaceAnalyzer(model)`` runs MTCNN (or no detector) and
aligns each face onto the model card's template; ``compare`` takes its threshold from the card."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.errors import FaceembedError, NoFaceError, NoThresholdsError, ShapeMismatchError
from faceembed.faces.embed import FaceModel
from faceembed.faces.nms import MIN_FACE_FRACTION

ImageLike = str | Path | np.ndarray


@dataclass
class Face:
    """One face of a photo: ``box`` (x1, y1, x2, y2), detector ``score``, ``landmarks`` (5, 2) as (x, y),
    ``embedding`` (unit length), and for PFE models ``sigma_sq`` (per-dimension variance), ``uncertainty``
    (its harmonic mean) and ``quality`` (``u_ref / (u_ref + uncertainty)`` in (0, 1], 0.5 = the median
    validation face; None when the card has no quality reference). Both are None for other models."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    embedding: np.ndarray
    sigma_sq: np.ndarray | None = None
    uncertainty: float | None = None
    quality: float | None = None

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


@dataclass
class Match:
    """A 1:1 decision: cosine ``score``, the ``threshold`` used (at false-accept rate ``far``), ``same``; ``notes``
    say when a photo held several faces (the largest was used). PFE models: the two faces' ``uncertainty`` and
    ``quality`` (None without a quality reference), first photo first."""

    score: float
    threshold: float
    far: float
    same: bool
    notes: list[str] = field(default_factory=list)
    uncertainty: tuple[float, float] | None = None
    quality: tuple[float | None, float | None] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"score": round(self.score, 6), "threshold": self.threshold, "far": self.far, "same": self.same,
             "decision": "same" if self.same else "different", "notes": self.notes}
        if self.uncertainty is not None:
            d["faces"] = [{"uncertainty": u, "quality": None if q is None else round(q, 4)}
                          for u, q in zip(self.uncertainty, self.quality or (None, None), strict=True)]
        return d


def load_rgb(image: ImageLike) -> np.ndarray:
    """A photo as uint8 ``HxWx3`` RGB: a file (any format, see :func:`faceembed.data.images.read_image`) or an
    array (``HxW`` grey, ``HxWx3`` RGB, ``HxWx4`` RGBA; uint8). RGBA arrays are composited on white, as image
    files with alpha are."""
    from faceembed.data.images import flatten_alpha, read_image

    if isinstance(image, str | Path):
        return read_image(image, "RGB")
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ShapeMismatchError(f"image arrays must be uint8, got {a.dtype}")
    if a.ndim == 2:
        return np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim == 3 and a.shape[2] in (3, 4) and min(a.shape[:2]) > 0:
        return np.ascontiguousarray(flatten_alpha(a) if a.shape[2] == 4 else a)
    raise ShapeMismatchError(f"image arrays must be HxW, HxWx3 (RGB) or HxWx4, got shape {list(a.shape)}")


class FaceAnalyzer:
    """Faces and their embeddings in photos, for one face model (a path, a built-in or an imported name, or a
    loaded :class:`FaceModel`). ``detector="none"``: every photo is already a face crop. The model runs on the
    fastest accurate configuration measured for it on this machine (``backend=None``; cached, see
    :meth:`FaceModel.load`); MTCNN and the model are opened once and kept warm for every later call. MTCNN's
    smallest face is ``min_face_size`` px or ``min_face_fraction`` of the photo's shorter side, whichever is
    larger (:mod:`faceembed.faces.detect`)."""

    def __init__(self, model: str | Path | FaceModel = "dlib-resnet", detector: str = "mtcnn",
                 min_face_size: float = 40.0, detector_backend: str = "auto", threads: int | None = None,
                 backend: str | None = None, min_face_fraction: float = MIN_FACE_FRACTION):
        if detector not in ("mtcnn", "none"):
            raise FaceembedError(f"detector must be 'mtcnn' or 'none', not {detector!r}")
        self.model = model if isinstance(model, FaceModel) else FaceModel.load(model, backend, threads=threads)
        from faceembed.faces.detect import DetectorConfig

        self.detector, self.min_face_size, self.detector_backend = detector, min_face_size, detector_backend
        self.min_face_fraction = min_face_fraction
        #: MTCNN's settings (the smallest face: ``min_face_size`` px or ``min_face_fraction`` of the shorter side)
        self.detector_config = DetectorConfig(min_face_size=min_face_size, min_face_fraction=min_face_fraction)
        self._mtcnn = None

    @property
    def card(self):
        return self.model.card

    def _detector(self):
        from faceembed.faces.detect import MTCNNDetector

        if self._mtcnn is None:
            self._mtcnn = MTCNNDetector(config=self.detector_config, backend=self.detector_backend)
        return self._mtcnn

    def _detect_many(self, rgbs: list[np.ndarray]) -> list[list]:
        from faceembed.faces.align import whole_image_landmarks
        from faceembed.faces.detect import Face as Detection

        if self.detector == "none":
            return [[Detection(np.array([0, 0, w - 1, h - 1], np.float32), 1.0, whole_image_landmarks(h, w))]
                    for h, w in (im.shape[:2] for im in rgbs)]
        return self._detector().detect_many(rgbs)

    def faces(self, image: ImageLike) -> list[Face]:
        """Every face in ``image``, largest first (an empty list when there is none)."""
        return self.faces_batch([image])[0]

    def faces_batch(self, images: list[ImageLike], chunk: int = 16) -> list[list[Face]]:
        """:meth:`faces` of every photo, through one pipeline: files decoded in threads ahead of detection,
        MTCNN batched over ``chunk`` photos at a time (R-Net / O-Net crops shared), every face aligned and
        embedded in shared batches. The same faces as one photo at a time (embeddings to float noise)."""
        from concurrent.futures import ThreadPoolExecutor

        from faceembed.faces.align import align_face

        c = self.card
        found: list[list] = []
        if len(images) == 1:  # one photo (faces()): a thread pool would cost more than the decode it overlaps
            rgb = load_rgb(images[0])
            found = [(rgb, self._detect_many([rgb])[0])]
        else:
            with ThreadPoolExecutor(2) as pool:
                batch: list[np.ndarray] = []
                for rgb in pool.map(load_rgb, images):
                    batch.append(rgb)
                    if len(batch) == chunk:
                        found += [(b, f) for b, f in zip(batch, self._detect_many(batch), strict=True)]
                        batch = []
                if batch:
                    found += [(b, f) for b, f in zip(batch, self._detect_many(batch), strict=True)]
        per_photo = [sorted(f, key=lambda d: -float((d.box[2] - d.box[0]) * (d.box[3] - d.box[1])))
                     for _, f in found]
        crops = [align_face(rgb, d.landmarks, (c.height, c.width), template=c.template)
                 for (rgb, _), dets in zip(found, per_photo, strict=True) for d in dets]
        if not crops:
            return [[] for _ in images]
        emb, sig = self.model.embed(np.stack(crops))
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        u, q = self.model.uncertainty(sig), self.model.quality(sig)
        out, i = [], 0
        for dets in per_photo:
            faces = []
            for d in dets:
                faces.append(Face(np.asarray(d.box, np.float32)[:4], float(d.score),
                                  np.asarray(d.landmarks, np.float32), emb[i], None if sig is None else sig[i],
                                  None if u is None else float(u[i]), None if q is None else float(q[i])))
                i += 1
            out.append(faces)
        return out

    def face(self, image: ImageLike, name: str = "photo") -> tuple[Face, list[str]]:
        """The largest face of ``image`` and notes (several faces); no face is a :class:`NoFaceError`."""
        faces = self.faces(image)
        where = str(image) if isinstance(image, str | Path) else name
        if not faces:
            raise NoFaceError("no face found in this photo", where)
        notes = [f"{where}: {len(faces)} faces, used the largest"] if len(faces) > 1 else []
        return faces[0], notes

    def threshold(self, far: float = 1e-3) -> float:
        """The card's calibrated cosine threshold at false-accept rate ``far``."""
        t = self.card.thresholds
        if t is None:
            raise NoThresholdsError(f"model {self.card.name or self.model.path.name!r} has no calibrated thresholds: "
                                    "run 'faceembed calibrate --model MODEL' first", self.model.path)
        value = t.at(far)
        if value is None:
            raise NoThresholdsError(f"no threshold at FAR {far:g} in the model card (it has {', '.join(t.far)})",
                                    self.model.path)
        return value

    def compare(self, a: ImageLike, b: ImageLike, far: float = 1e-3) -> Match:
        """Are the largest faces of ``a`` and ``b`` the same person? Cosine similarity against the card's
        threshold at false-accept rate ``far``."""
        threshold = self.threshold(far)
        (fa, na), (fb, nb) = self.face(a, "first photo"), self.face(b, "second photo")
        score = float(np.dot(fa.embedding, fb.embedding))
        pfe = fa.uncertainty is not None and fb.uncertainty is not None
        return Match(score, threshold, far, score >= threshold, na + nb,
                     (fa.uncertainty, fb.uncertainty) if pfe else None, (fa.quality, fb.quality) if pfe else None)
