"""The one enrollment path: every photo of a one-folder-per-person tree detected, aligned and embedded, low-quality
faces set aside. ``faceembed enroll``, :class:`~faceembed.faces.gallery.Gallery` and collections call it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faceembed.engines import LOCAL, Engine
from faceembed.errors import FaceembedError


def identity_images(folder: str | Path, min_images: int = 1) -> tuple[list[str], list[str]]:
    """Relative image paths and person names of a one-folder-per-person tree (people with >= min_images)."""
    from faceembed.data.images import list_identity_folder

    items = list_identity_folder(folder)
    counts = Counter(name for _, name in items)
    items = [(r, n) for r, n in items if counts[n] >= min_images]
    if not items:
        raise FaceembedError(f"no person folder with >= {min_images} images", folder)
    return [r for r, _ in items], [n for _, n in items]


def landmarks_of(path: str | Path | None) -> dict | None:
    from faceembed.data.lfw import read_landmarks

    return read_landmarks(path) if path is not None else None


def rows_of(relpaths: Sequence[str], kept: Sequence[str]) -> Any:
    """Row indices (into ``relpaths``) of the ``kept`` photos, in ``relpaths`` order."""
    import numpy as np

    keep = set(kept)
    return np.asarray([i for i, r in enumerate(relpaths) if r in keep], dtype=np.int64)


@dataclass
class PeopleFaces:
    """The enrolled faces of a one-folder-per-person tree: per kept photo its person, embedding and (PFE) sigma^2;
    the photos left out (``failed``: no face, unreadable) and set aside (below ``min_quality``)."""

    images: Path
    people: list[str]
    relpaths: list[str]
    embeddings: Any
    sigma_sq: Any
    failed: list[tuple[str, str]]
    set_aside: list[dict]
    whole: list[str]
    seconds: dict[str, float]
    config: dict  # how the model ran (FaceModel.config: file, backend, precision)


def embed_people(images: str | Path, model: Any, landmarks: str | Path | None = None, workers: int | None = None,
                 engine: Engine = LOCAL, min_quality: float | None = None, **options: Any) -> PeopleFaces:
    """Detect, align and embed every photo of a one-folder-per-person tree (``DIR/Name/photo``, any format):
    the one enrollment path of ``faceembed enroll``, :meth:`Gallery.from_folder <faceembed.faces.gallery.Gallery>`
    and collections. ``model``: a name, a file or a loaded FaceModel; ``options`` are
    :class:`~faceembed.faces.embed.EmbedOptions` fields. With ``min_quality`` (PFE models whose card has a quality
    reference) faces of lower quality are set aside, not enrolled."""
    from faceembed.faces.quality import check_min_quality, qualities, set_aside
    from faceembed.models.card_io import read_card

    images = Path(images)
    rels, people = identity_images(images)
    card = model.card if hasattr(model, "card") else read_card(model)
    check_min_quality(card, min_quality, getattr(model, "path", model))  # before any photo is read
    res = engine.embed(images, rels, model, landmarks_of(landmarks), workers, **options)
    if not res.relpaths:
        raise FaceembedError("no face could be embedded", images)
    kept, aside = set_aside(res.relpaths, qualities(card, res.sigma_sq), min_quality)
    if not kept:
        raise FaceembedError(f"no face could be enrolled: all {len(aside)} have quality below {min_quality:g}",
                             images)
    rows = rows_of(res.relpaths, kept)
    label = dict(zip(rels, people, strict=True))
    return PeopleFaces(images, [label[r] for r in kept], kept, res.embeddings[rows],
                       None if res.sigma_sq is None else res.sigma_sq[rows], res.failed, aside, res.whole,
                       res.seconds, res.config)


