"""The store's records (collections, new faces, stored faces, the matrix a search loads) and the checks on the
names a client gives."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from faceembed.errors import FaceembedError

COLLECTION_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
MAX_SUBJECT = 200


@dataclass(frozen=True)
class CollectionInfo:
    """A collection: the model it is bound to (as given, and its card digest), the embedding ``dim``, the
    false-accept rate and the threshold at it, when it was made, free ``meta``."""

    name: str
    model: str
    model_digest: str
    dim: int
    far: float
    threshold: float | None
    created: float
    meta: dict = field(default_factory=dict)


@dataclass
class NewFace:
    """A face to add: its subject, unit embedding and (PFE models) sigma^2, quality, box ``[x, y, w, h]``, five
    landmarks, the photo's digest and its path relative to a photo root."""

    subject: str
    embedding: np.ndarray
    sigma_sq: np.ndarray | None = None
    quality: float | None = None
    box: list[float] | None = None
    landmarks: list[list[float]] | None = None
    photo_digest: str | None = None
    image: str | None = None


@dataclass(frozen=True)
class FaceRow:
    """A stored face."""

    face_id: str
    subject: str
    embedding: np.ndarray
    sigma_sq: np.ndarray | None
    quality: float | None
    box: list[float] | None
    landmarks: list | None
    photo_digest: str | None
    image: str | None
    created: float


@dataclass
class FaceMatrix:
    """Every face of a collection at once (store order): ids, subjects, float32 ``[N, D]`` embeddings and
    sigma^2 (None unless every face has one), and the collection's change counter when it was read (read before
    the rows, so a write in between makes the matrix newer than ``version``, never older)."""

    face_ids: list[str]
    subjects: list[str]
    embeddings: np.ndarray
    sigma_sq: np.ndarray | None
    version: int


def check_collection_name(name: Any) -> str:
    """A collection name: 1-100 characters of ``[A-Za-z0-9_.-]``."""
    if not isinstance(name, str) or not COLLECTION_NAME.fullmatch(name):
        raise FaceembedError(f"a collection name is 1-100 characters of A-Z a-z 0-9 _ . -, not {name!r:.120}")
    return name


def check_subject(subject: Any) -> str:
    """A subject name: 1-200 characters, no control characters; anything else is kept verbatim."""
    if not isinstance(subject, str) or not 1 <= len(subject) <= MAX_SUBJECT:
        raise FaceembedError(f"a subject name is 1-{MAX_SUBJECT} characters, not {subject!r:.120}")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in subject):
        raise FaceembedError(f"a subject name may not hold control characters: {subject!r:.120}")
    return subject
