"""The Python API's collections: people enrolled into a persistent store (SQLite or PostgreSQL, see
:mod:`faceembed.store`) and recognised from it, the same operations ``faceembed serve`` offers over HTTP::

    col, key = fe.Collection.create("sqlite:///faces.db", "office")      # bound to dlib-resnet, FAR 1e-3
    col.enroll("Ann", "ann.jpg")
    col.recognize("door.jpg")   # [{"box", "score", "landmarks", "subject", "matches": [...]}]

A collection is bound to one model: its name or path as given and the SHA-256 of its file (weights and card;
recalibrating changes it). Opening it with another model is refused; so are embeddings of another size.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.errors import FaceembedError, NoFaceError, NoThresholdsError
from faceembed.faces.analyzer import Face, FaceAnalyzer
from faceembed.faces.photo_input import Photo, photo_rgb
from faceembed.store import CollectionIndex, CollectionInfo, NewFace, Store, open_store

DETECTORS = ("mtcnn", "none")
NO_FACE = ("skip", "whole")


@functools.lru_cache(maxsize=16)
def _digest_of(path: str, size: int, mtime_ns: int) -> str:
    from faceembed.files import file_sha256

    return file_sha256(path)


def model_digest(model: str | Path) -> str:
    """SHA-256 of a model's file (a name is resolved first): it changes with the weights and with the card,
    which faceembed keeps inside the file. Hashed once per state of the file."""
    from faceembed.models.registry import resolve_model

    path = resolve_model(model)
    st = path.stat()
    return _digest_of(str(path), st.st_size, st.st_mtime_ns)


def card_threshold(model: str | Path, far: float) -> float:
    """The model card's calibrated cosine threshold at ``far`` (NoThresholdsError naming ``faceembed calibrate``
    when the card has none, or none at that FAR)."""
    from faceembed.models.card_io import read_card

    t = read_card(model).thresholds
    if t is None:
        raise NoThresholdsError(f"model {str(model)!r} has no calibrated thresholds: run 'faceembed calibrate "
                                f"--model {model}' first, then create the collection")
    value = t.at(far)
    if value is None:
        raise NoThresholdsError(f"no threshold at FAR {far:g} in the card of {str(model)!r} (it has "
                                f"{', '.join(t.far)}): pick one of those with --far, or rerun 'faceembed calibrate'")
    return value


def _box(face: Face) -> list[float]:
    from faceembed.faces.detect import box_xywh

    return box_xywh(face.box, 2)


def face_dict(face: Face) -> dict[str, Any]:
    """A face for JSON: box ``[x, y, w, h]``, detector score, landmarks, and quality for PFE models."""
    d: dict[str, Any] = {"box": _box(face), "score": round(float(face.score), 4),
                         "landmarks": np.round(face.landmarks.astype(float), 2).tolist()}
    if face.quality is not None:
        d["quality"] = round(float(face.quality), 4)
    return d


def _check_options(detector: str, no_face: str) -> None:
    if detector not in DETECTORS:
        raise FaceembedError(f"detector must be one of {', '.join(DETECTORS)}, not {detector!r:.40}")
    if no_face not in NO_FACE:
        raise FaceembedError(f"no_face must be one of {', '.join(NO_FACE)}, not {no_face!r:.40}")


class Collection:
    """One collection of a store, with the face pipeline of its model. Build it with :meth:`create` or
    :meth:`open`; ``db`` is a store URL or an open :class:`~faceembed.store.Store` (then not closed by
    :meth:`close`)."""

    def __init__(self, store: Store, info: CollectionInfo, analyzer: FaceAnalyzer | None = None,
                 own_store: bool = False):
        self.store, self.info, self._own_store = store, info, own_store
        self._analyzers: dict[str, FaceAnalyzer] = {}
        if analyzer is not None:
            self._check_model(analyzer)
            self._analyzers[analyzer.detector] = analyzer
        else:
            self._check_model_file()
        self._index: CollectionIndex | None = None

    @classmethod
    def create(cls, db: str | Path | Store, name: str, model: str | Path = "dlib-resnet", far: float = 1e-3,
               meta: dict | None = None) -> tuple[Collection, str]:
        """A new collection bound to ``model``, its threshold the card's at ``far``; returns it and its first API
        key (shown once)."""
        from faceembed.models.card_io import read_card

        threshold = card_threshold(model, far)
        dim = read_card(model).embedding_size
        store, own = _store(db)
        try:
            info, key = store.create_collection(name, str(model), model_digest(model), int(dim), far, threshold, meta)
            return cls(store, info, own_store=own), key
        except BaseException:
            if own:
                store.close()
            raise

    @classmethod
    def open(cls, db: str | Path | Store, name: str, analyzer: FaceAnalyzer | None = None) -> Collection:
        """Collection ``name`` of the store; ``analyzer`` (default: one built for the collection's model on first
        use) must run the collection's model."""
        store, own = _store(db)
        try:
            return cls(store, store.collection(name), analyzer, own_store=own)
        except BaseException:
            if own:
                store.close()
            raise

    def _check_model_file(self) -> None:
        try:
            digest = model_digest(self.info.model)
        except FaceembedError as exc:
            raise FaceembedError(f"collection {self.info.name!r} is bound to model {self.info.model!r}, which "
                                 f"cannot be found here ({exc.one_line()})") from None
        self._check_digest(digest, self.info.model)

    def _check_model(self, analyzer: FaceAnalyzer) -> None:
        self._check_digest(model_digest(analyzer.model.path), str(analyzer.model.path))

    def _check_digest(self, digest: str, what: str) -> None:
        if digest != self.info.model_digest:
            raise FaceembedError(f"collection {self.info.name!r} is bound to model {self.info.model!r} (card digest "
                                 f"{self.info.model_digest[:12]}), not {what} (digest {digest[:12]}): open it with "
                                 "its own model, or create another collection")

    # -- the pipeline -----------------------------------------------------------------------------------------
    @property
    def analyzer(self) -> FaceAnalyzer:
        """The collection's FaceAnalyzer (MTCNN), built on first use."""
        return self._analyzer("mtcnn")

    def _analyzer(self, detector: str) -> FaceAnalyzer:
        if detector not in self._analyzers:
            base = next(iter(self._analyzers.values()), None)
            self._analyzers[detector] = FaceAnalyzer(base.model if base else self.info.model, detector=detector)
        return self._analyzers[detector]

    @property
    def threshold(self) -> float:
        """The collection's cosine threshold (at its FAR)."""
        if self.info.threshold is not None:
            return self.info.threshold
        return self.analyzer.threshold(self.info.far)

    @property
    def name(self) -> str:
        """The collection's name."""
        return self.info.name

    def _faces(self, photo: Photo, detector: str, no_face: str) -> list[Face]:
        _check_options(detector, no_face)
        rgb = photo_rgb(photo)
        faces = self._analyzer(detector).faces(rgb)
        if not faces and detector == "mtcnn" and no_face == "whole":
            faces = self._analyzer("none").faces(rgb)
        return faces

    def largest_face(self, photo: Photo, detector: str = "mtcnn", no_face: str = "skip") -> Face:
        """The photo's largest face (NoFaceError when it has none)."""
        faces = self._faces(photo, detector, no_face)
        if not faces:
            raise NoFaceError("no face found in this photo", photo if isinstance(photo, str | Path) else None)
        return faces[0]

    @property
    def index(self) -> CollectionIndex:
        """The in-memory search, loaded on first use and refreshed (one cheap read) before each search."""
        if self._index is None:
            self._index = CollectionIndex(self.store, self.info.name)
        else:
            self._index.refresh()
        return self._index

    # -- operations -------------------------------------------------------------------------------------------
    def enroll(self, subject: str, photo: Photo, detector: str = "mtcnn", no_face: str = "skip",
               image: str | None = None) -> dict[str, Any]:
        """Add the photo's largest face to ``subject`` (created on its first face); NoFaceError when it has none.
        ``image``: the photo's path relative to a photo root, kept with the face."""
        face = self.largest_face(photo, detector, no_face)
        d = face_dict(face)
        new = NewFace(subject, face.embedding, face.sigma_sq, face.quality, d["box"], d["landmarks"],
                      _photo_digest(photo), image)
        face_id = self.store.add_faces(self.info.name, [new])[0]
        return {"face_id": face_id, "subject": subject, **d}

    def add_embedding(self, subject: str, embedding: np.ndarray, sigma_sq: np.ndarray | None = None) -> str:
        """Add a face by its embedding (normalised to unit length here); its new id."""
        v = np.asarray(embedding, np.float32).reshape(-1)
        v = v / max(float(np.linalg.norm(v)), 1e-12)
        return self.store.add_faces(self.info.name, [NewFace(subject, v, sigma_sq)])[0]

    def search(self, embeddings: np.ndarray, limit: int = 5) -> list[list[dict[str, Any]]]:
        """The ``limit`` best subjects of each unit embedding: ``[{"subject", "similarity"}]``."""
        hits = self.index.search(embeddings, limit)
        return [[{"subject": s, "similarity": round(v, 6)} for s, v in row] for row in hits]

    def recognize(self, photo: Photo, limit: int = 5, detector: str = "mtcnn",
                  no_face: str = "skip") -> list[dict[str, Any]]:
        """Every face of the photo, largest first, with its ``limit`` best ``matches`` and ``subject``: the best
        match at or above the collection's threshold, or None."""
        faces = self._faces(photo, detector, no_face)
        if not faces:
            return []
        matches = self.search(np.stack([f.embedding for f in faces]), limit)
        out = []
        for face, m in zip(faces, matches, strict=True):
            best = m[0]["subject"] if m and m[0]["similarity"] >= self.threshold else None
            out.append({**face_dict(face), "subject": best, "matches": m})
        return out

    def verify(self, a: Photo, b: Photo, detector: str = "mtcnn") -> dict[str, Any]:
        """Are the largest faces of ``a`` and ``b`` the same person, at the collection's threshold?"""
        fa, fb = self.largest_face(a, detector), self.largest_face(b, detector)
        similarity = float(np.dot(fa.embedding, fb.embedding))
        return {"same": similarity >= self.threshold, "similarity": round(similarity, 6),
                "threshold": self.threshold, "far": self.info.far}

    def embed(self, photo: Photo, detector: str = "mtcnn", no_face: str = "skip") -> list[dict[str, Any]]:
        """Every face of the photo with its ``embedding`` (and ``sigma_sq`` for PFE models) as lists."""
        out = []
        for f in self._faces(photo, detector, no_face):
            d = {**face_dict(f), "embedding": f.embedding.astype(float).tolist()}
            if f.sigma_sq is not None:
                d["sigma_sq"] = f.sigma_sq.astype(float).tolist()
            out.append(d)
        return out

    def subjects(self) -> list[dict]:
        """``[{"subject", "faces", "named"}]`` sorted by subject."""
        return self.store.subjects(self.info.name)

    def rename(self, old: str, new: str) -> None:
        """Rename a subject; into an existing name it merges."""
        self.store.rename_subject(self.info.name, old, new)

    def delete_subject(self, subject: str) -> None:
        """Remove a subject with its faces."""
        self.store.delete_subject(self.info.name, subject)

    def delete_face(self, face_id: str) -> None:
        """Remove one face (by the id ``enroll`` returned)."""
        self.store.delete_face(self.info.name, face_id)

    def close(self) -> None:
        """Close the store when this collection opened it."""
        if self._own_store:
            self.store.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _store(db: str | Path | Store) -> tuple[Store, bool]:
    return (db, False) if isinstance(db, Store) else (open_store(db), True)


def _photo_digest(photo: Photo) -> str | None:
    """SHA-256 of the photo's bytes (a file or raw bytes); None for an array."""
    if isinstance(photo, bytes | bytearray | memoryview):
        return hashlib.sha256(photo).hexdigest()
    if isinstance(photo, str | Path):
        from faceembed.files import file_sha256

        return file_sha256(photo)
    return None
