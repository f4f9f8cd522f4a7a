"""The Python API's gallery: people enrolled from photos (or embeddings), searched 1:N. Saved as the ``.npz``
gallery ``faceembed identify`` reads (docs/formats.md), plus every enrolled embedding (and, for PFE models,
sigma^2) so that people can be added and removed after loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceembed.errors import FaceembedError, InputFormatError, LowQualityError, MissingInputError
from faceembed.evaluation.identification import UNKNOWN, build_gallery, identify, load_gallery, save_gallery
from faceembed.faces.analyzer import FaceAnalyzer, ImageLike


class Gallery:
    """Enrolled people: each has the embeddings of their photos; a person's template is the re-normalised mean
    of them (:func:`faceembed.evaluation.identification.build_gallery`); with PFE models (every face has a
    ``sigma_sq``) the faces' Gaussians are fused, and :attr:`uncertainty` / :attr:`quality` give each
    person's fused uncertainty and quality."""

    def __init__(self, analyzer: FaceAnalyzer | None = None):
        self.analyzer = analyzer
        self.embeddings: dict[str, list[np.ndarray]] = {}
        self.sigma_sq: dict[str, list[np.ndarray | None]] = {}  # per face, None for non-PFE models
        self.skipped: list[tuple[str, str]] = []  # (photo, reason) that from_folder could not enroll
        self.set_aside: list[tuple[str, float]] = []  # (photo, quality) below from_folder's min_quality

    @classmethod
    def from_folder(cls, folder: str | Path, analyzer: FaceAnalyzer, min_quality: float | None = None) -> Gallery:
        """Enroll every person folder of ``folder`` (``folder/Name/photo``, any image format) as ``faceembed
        enroll`` does (:func:`faceembed.faces.enrollment.embed_people`, with the analyzer's model and detector);
        photos without a face are left out and listed in ``gallery.skipped``; with ``min_quality`` (a PFE model
        with a quality reference) faces of lower quality are not enrolled and listed in ``gallery.set_aside``."""
        from faceembed.faces.enrollment import embed_people

        faces = embed_people(folder, analyzer.model, min_quality=min_quality, detector=analyzer.detector,
                             min_face_size=analyzer.min_face_size, min_face_fraction=analyzer.min_face_fraction)
        gallery = cls.of_faces(faces.people, faces.embeddings, faces.sigma_sq, analyzer)
        gallery.skipped = list(faces.failed)
        gallery.set_aside = [(a["image"], float(a["quality"])) for a in faces.set_aside]
        return gallery

    @classmethod
    def of_faces(cls, people: list[str], embeddings: np.ndarray, sigma_sq: np.ndarray | None = None,
                 analyzer: FaceAnalyzer | None = None) -> Gallery:
        """A gallery of embedded faces: ``people[i]`` is the person of ``embeddings[i]`` (and ``sigma_sq[i]``)."""
        gallery = cls(analyzer)
        for i, name in enumerate(people):
            gallery.add(name, np.asarray(embeddings[i]), None if sigma_sq is None else sigma_sq[i])
        return gallery

    @classmethod
    def from_collection(cls, db_url: str, name: str, analyzer: FaceAnalyzer | None = None) -> Gallery:
        """Every face of collection ``name`` of a store (:mod:`faceembed.store`), by subject; ``analyzer`` (to
        search photos) must run the collection's model."""
        from faceembed.faces.collection import Collection

        with Collection.open(db_url, name, analyzer) as col:
            rows = col.store.faces(name)
        gallery = cls(analyzer)
        for row in rows:
            gallery.embeddings.setdefault(row.subject, []).append(row.embedding)
            gallery.sigma_sq.setdefault(row.subject, []).append(row.sigma_sq)
        return gallery

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def names(self) -> list[str]:
        return sorted(self.embeddings)

    def _face(self, item: ImageLike | np.ndarray, sigma_sq: np.ndarray | None,
              min_quality: float | None) -> tuple[np.ndarray, np.ndarray | None]:
        """(unit embedding, sigma_sq or None) of an embedding or of a photo's largest face."""
        if isinstance(item, np.ndarray) and item.ndim == 1:
            if min_quality is not None:
                raise FaceembedError("min_quality needs a photo (its face's quality), not an embedding")
            v, s = item.astype(np.float32), None if sigma_sq is None else np.asarray(sigma_sq, np.float32)
        else:
            if self.analyzer is None:
                raise FaceembedError("this gallery has no FaceAnalyzer: give embeddings, or Gallery(analyzer)")
            face = self.analyzer.face(item)[0]
            _check_quality(face.quality, min_quality, item)
            v, s = face.embedding, face.sigma_sq
        if s is not None and s.shape != v.shape:
            raise InputFormatError(f"sigma_sq has shape {list(s.shape)} but the embedding {list(v.shape)}")
        return v / max(float(np.linalg.norm(v)), 1e-12), s

    def add(self, name: str, item: ImageLike | np.ndarray, sigma_sq: np.ndarray | None = None,
            min_quality: float | None = None) -> None:
        """Add a photo (file or array: its largest face) or an embedding (with its ``sigma_sq`` for PFE) to
        person ``name``. ``min_quality``: a face of lower quality is refused (:class:`LowQualityError`)."""
        if not name or name == UNKNOWN:
            raise InputFormatError(f"a person's name must be non-empty and not {UNKNOWN!r}")
        v, s = self._face(item, sigma_sq, min_quality)
        self.embeddings.setdefault(name, []).append(v)
        self.sigma_sq.setdefault(name, []).append(s)

    def remove(self, name: str) -> None:
        """Forget person ``name``."""
        if name not in self.embeddings:
            raise MissingInputError(f"no person {name!r} in the gallery")
        del self.embeddings[name]
        self.sigma_sq.pop(name, None)

    def _face_sigmas(self) -> np.ndarray | None:
        """Every face's sigma^2 in :meth:`_built` order, or None unless every face has one."""
        sigs = [s for n in self.names for s in self.sigma_sq.get(n, [None] * len(self.embeddings[n]))]
        return None if not sigs or any(s is None for s in sigs) else np.stack(sigs)

    def _built(self):
        labels = [n for n in self.names for _ in self.embeddings[n]]
        return build_gallery(np.stack([e for n in self.names for e in self.embeddings[n]]), labels,
                             self._face_sigmas())

    @property
    def uncertainty(self) -> dict[str, float | None]:
        """Each person's fused uncertainty (harmonic mean of the fused sigma^2); None without sigma^2."""
        from faceembed.evaluation.rejection import face_uncertainty

        g = self._built() if self.embeddings else None
        if g is None or g.sigma_sq is None:
            return dict.fromkeys(self.names)
        return dict(zip(g.names, face_uncertainty(g.sigma_sq).tolist(), strict=True))

    @property
    def quality(self) -> dict[str, float | None]:
        """Each person's fused quality, ``u_ref / (u_ref + u)`` with the model card's ``u_ref``; None without
        sigma^2 or a quality reference. Fusing several photos lowers the uncertainty: a person's quality is
        above that of each of their faces."""
        card = self.analyzer.card if self.analyzer is not None else None
        u_ref = card.quality.u_ref if card is not None and card.quality is not None else None
        return {n: None if u is None or u_ref is None else u_ref / (u_ref + u) for n, u in self.uncertainty.items()}

    def search(self, item: ImageLike | np.ndarray, k: int = 5, threshold: float | None = None,
               metric: str = "cosine", sigma_sq: np.ndarray | None = None,
               min_quality: float | None = None) -> list[tuple[str, float]]:
        """The ``k`` best ``(name, score)`` for a photo's largest face or an embedding (with its ``sigma_sq``
        for ``metric="mls"``): cosine, or the mutual likelihood score against the fused templates; the first is
        ``"unknown"`` when the best score is below ``threshold``. ``min_quality``: a probe face of lower
        quality is refused (:class:`LowQualityError`)."""
        if not self.embeddings:
            raise FaceembedError("the gallery is empty")
        v, s = self._face(item, sigma_sq, min_quality)
        return identify(self._built(), v[None], min(k, len(self)), threshold, metric=metric,
                        probe_sigma_sq=None if s is None else s[None])[0]

    def save(self, path: str | Path, meta: dict | None = None):
        """Write the gallery (readable by ``faceembed identify`` too), atomically; ``meta`` (default: the model)
        goes into the file. Returns the saved :class:`~faceembed.evaluation.identification.Gallery`."""
        g = self._built()
        g.meta = meta if meta is not None else {"model": str(self.analyzer.model.path) if self.analyzer else None}
        g.face_labels = [n for n in self.names for _ in self.embeddings[n]]
        g.faces = np.stack([e for n in self.names for e in self.embeddings[n]])
        g.face_sigma_sq = self._face_sigmas()
        save_gallery(path, g)
        return g

    @classmethod
    def load(cls, path: str | Path, analyzer: FaceAnalyzer | None = None) -> Gallery:
        """Read a gallery saved by :meth:`save` (or by ``faceembed enroll``: then people can be searched and
        removed, and new photos added, but a person's old photos are represented by their template and, for PFE
        models, its fused sigma^2)."""
        g = load_gallery(path)
        gallery = cls(analyzer)
        for i, name in enumerate(g.names):
            gallery.embeddings[name] = [g.templates[i]]
            gallery.sigma_sq[name] = [None if g.sigma_sq is None else g.sigma_sq[i]]
        if g.faces is not None:
            gallery.embeddings, gallery.sigma_sq = {}, {}
            sigs = g.face_sigma_sq if g.face_sigma_sq is not None else [None] * len(g.faces)
            for label, row, s in zip(g.face_labels, g.faces, sigs, strict=True):
                gallery.embeddings.setdefault(label, []).append(row)
                gallery.sigma_sq.setdefault(label, []).append(s)
        return gallery


def _check_quality(quality: float | None, min_quality: float | None, item: object) -> None:
    """Refuse a face below ``min_quality`` (:class:`LowQualityError`, naming the photo)."""
    from faceembed.faces.quality import below_reason, check_quality_value

    check_quality_value(min_quality)
    if min_quality is None:
        return
    if quality is None:
        raise FaceembedError("min_quality needs a PFE model whose card has a quality reference (u_ref)")
    if quality < min_quality:
        where = str(item) if isinstance(item, str | Path) else None
        raise LowQualityError(below_reason(quality, min_quality), where, quality)
