"""The Python API's gallery: people enrolled from photos (or embeddings), searched 1:N. Saved as the ``.npz``
gallery ``faceembed identify`` reads (docs/formats.md), plus every enrolled embedding so that people can be
added and removed after loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceembed.errors import FaceembedError, InputFormatError, MissingInputError
from faceembed.evaluation.identification import UNKNOWN, build_gallery, identify, load_gallery, save_gallery
from faceembed.faces.analyzer import FaceAnalyzer, ImageLike


class Gallery:
    """Enrolled people: each has the embeddings of their photos; a person's template is the re-normalised mean
    of them (:func:`faceembed.evaluation.identification.build_gallery`)."""

    def __init__(self, analyzer: FaceAnalyzer | None = None):
        self.analyzer = analyzer
        self.embeddings: dict[str, list[np.ndarray]] = {}
        self.skipped: list[tuple[str, str]] = []  # (photo, reason) that from_folder could not enroll

    @classmethod
    def from_folder(cls, folder: str | Path, analyzer: FaceAnalyzer) -> Gallery:
        """Enroll every person folder of ``folder`` (``folder/Name/photo``, any image format); photos without
        a face are left out and listed in ``gallery.skipped``."""
        from faceembed.data.images import list_identity_folder

        gallery = cls(analyzer)
        for rel, name in list_identity_folder(folder):
            try:
                gallery.add(name, Path(folder) / rel)
            except FaceembedError as exc:
                gallery.skipped.append((rel, exc.one_line()))
        if not gallery.embeddings:
            raise FaceembedError("no face could be enrolled", folder)
        return gallery

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def names(self) -> list[str]:
        return sorted(self.embeddings)

    def _embedding(self, item: ImageLike | np.ndarray) -> np.ndarray:
        if isinstance(item, np.ndarray) and item.ndim == 1:
            v = item.astype(np.float32)
        else:
            if self.analyzer is None:
                raise FaceembedError("this gallery has no FaceAnalyzer: give embeddings, or Gallery(analyzer)")
            v = self.analyzer.face(item)[0].embedding
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def add(self, name: str, item: ImageLike | np.ndarray) -> None:
        """Add a photo (file or array: its largest face) or an embedding to person ``name``."""
        if not name or name == UNKNOWN:
            raise InputFormatError(f"a person's name must be non-empty and not {UNKNOWN!r}")
        self.embeddings.setdefault(name, []).append(self._embedding(item))

    def remove(self, name: str) -> None:
        """Forget person ``name``."""
        if name not in self.embeddings:
            raise MissingInputError(f"no person {name!r} in the gallery")
        del self.embeddings[name]

    def _built(self):
        labels = [n for n in self.names for _ in self.embeddings[n]]
        return build_gallery(np.stack([e for n in self.names for e in self.embeddings[n]]), labels)

    def search(self, item: ImageLike | np.ndarray, k: int = 5,
               threshold: float | None = None) -> list[tuple[str, float]]:
        """The ``k`` best ``(name, cosine)`` for a photo's largest face or an embedding; the first is
        ``"unknown"`` when the best score is below ``threshold``."""
        if not self.embeddings:
            raise FaceembedError("the gallery is empty")
        return identify(self._built(), self._embedding(item)[None], min(k, len(self)), threshold)[0]

    def save(self, path: str | Path) -> None:
        """Write the gallery (readable by ``faceembed identify`` too), atomically."""
        g = self._built()
        g.meta = {"model": str(self.analyzer.model.path) if self.analyzer else None}
        g.face_labels = [n for n in self.names for _ in self.embeddings[n]]
        g.faces = np.stack([e for n in self.names for e in self.embeddings[n]])
        save_gallery(path, g)

    @classmethod
    def load(cls, path: str | Path, analyzer: FaceAnalyzer | None = None) -> Gallery:
        """Read a gallery saved by :meth:`save` (or by ``faceembed enroll``: then people can be searched and
        removed, and new photos added, but a person's old photos are represented by their template)."""
        g = load_gallery(path)
        gallery = cls(analyzer)
        for i, name in enumerate(g.names):
            gallery.embeddings[name] = [g.templates[i]]
        if g.faces is not None:
            gallery.embeddings = {}
            for label, row in zip(g.face_labels, g.faces, strict=True):
                gallery.embeddings.setdefault(label, []).append(row)
        return gallery
