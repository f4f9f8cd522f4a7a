"""``faceembed enroll`` / ``identify`` with ``--db URL --collection NAME``: photo folders into and against a
collection of the store (instead of an ``.npz`` gallery)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from faceembed.errors import FaceembedError, LowQualityError
from faceembed.faces.collection import Collection, face_dict
from faceembed.faces.nms import MIN_FACE_FRACTION
from faceembed.faces.people import expand_images
from faceembed.store import NewFace


def _open(db_url: str, name: str, model: str | Path | None, detector: str, min_face_size: float,
          min_face_fraction: float) -> Collection:
    from faceembed.faces.analyzer import FaceAnalyzer

    analyzer = None if model is None else FaceAnalyzer(model, detector=detector, min_face_size=min_face_size,
                                                       min_face_fraction=min_face_fraction)
    return Collection.open(db_url, name, analyzer)


def enroll_folder_into_collection(images: str | Path, db_url: str | None, name: str | None,
                                  model: str | Path | None = None, min_quality: float | None = None,
                                  detector: str = "mtcnn", no_face: str = "skip", progress: bool = False,
                                  min_face_size: float = 40.0, out: object = None,
                                  min_face_fraction: float = MIN_FACE_FRACTION) -> dict[str, Any]:
    """Enroll every person folder of ``images`` (``images/Name/photo``) into collection ``name``: each photo's
    largest face, one transaction per person. ``model`` (optional) must be the collection's. Returns
    ``{"collection", "db", "people", "faces_added", "photos", "skipped": [(photo, reason)], "set_aside": [...]}``
    (``out``: the CLI's --out, refused alongside a store)."""
    _check_db_target(db_url, name, "--out", out)
    from faceembed.data.images import list_identity_folder
    from faceembed.faces.quality import below_reason, check_min_quality, check_quality_value
    from faceembed.report.progress import progress_bar

    check_quality_value(min_quality)
    col = _open(db_url, name, model, detector, min_face_size, min_face_fraction)
    try:
        if min_quality is not None:
            check_min_quality(col.analyzer.card, min_quality, col.info.model)
        pairs = list_identity_folder(images)
        by_person: dict[str, list[str]] = {}
        for rel, person in pairs:
            by_person.setdefault(person, []).append(rel)
        skipped: list[tuple[str, str]] = []
        aside: list[dict] = []
        added = 0
        bar, task = progress_bar(progress, len(pairs), "enroll")
        with bar:
            for person, rels in by_person.items():
                new = []
                for rel in rels:
                    try:
                        face = col.largest_face(Path(images) / rel, detector, no_face)
                        if min_quality is not None and (face.quality or 0.0) < min_quality:
                            raise LowQualityError(below_reason(face.quality or 0.0, min_quality), rel, face.quality)
                        d = face_dict(face)
                        new.append(NewFace(person, face.embedding, face.sigma_sq, face.quality, d["box"],
                                           d["landmarks"], None, rel))
                    except LowQualityError as exc:
                        aside.append({"image": rel, "quality": exc.quality, "reason": exc.message})
                    except FaceembedError as exc:
                        skipped.append((rel, exc.one_line()))
                    bar.advance(task)
                if new:
                    added += len(col.store.add_faces(name, new))
        if not added:
            raise FaceembedError("no face could be enrolled", images)
        return {"collection": name, "db": col.store.url, "people": len(col.subjects()), "faces_added": added,
                "photos": len(pairs), "skipped": skipped, "set_aside": aside}
    finally:
        col.close()


def identify_photos_in_collection(db_url: str | None, name: str | None, images: Sequence[str | Path],
                                  model: str | Path | None = None, top_k: int = 5, threshold: float | None = None,
                                  json_out: str | Path | None = None, detector: str = "mtcnn",
                                  no_face: str = "skip", min_face_size: float = 40.0,
                                  gallery: object = None,
                                  min_face_fraction: float = MIN_FACE_FRACTION) -> dict[str, Any]:
    """Name the person in each photo (its largest face) from collection ``name``: the ``top_k`` subjects by
    cosine, ``unknown`` first when the best is below ``threshold`` (default: the collection's). Returns
    ``{"answers": {photo: [{"name", "score"}]}, "failed": [{"image", "reason"}], "set_aside": []}`` like
    ``faceembed identify`` with a gallery (also written to ``json_out``; ``gallery``: the CLI's --gallery, refused
    alongside a store)."""
    _check_db_target(db_url, name, "--gallery", gallery)
    import numpy as np

    from faceembed.evaluation.identification import UNKNOWN
    from faceembed.files import write_json

    col = _open(db_url, name, model, detector, min_face_size, min_face_fraction)
    try:
        threshold = col.threshold if threshold is None else threshold
        root, rels = expand_images(images)
        answers, failed = {}, []
        for rel in rels:
            path = Path(root) / rel if root is not None else Path(rel)
            try:
                face = col.largest_face(path, detector, no_face)
            except FaceembedError as exc:
                failed.append({"image": rel, "reason": exc.one_line()})
                continue
            hits = col.index.search(np.asarray(face.embedding)[None], top_k)[0]
            if hits and hits[0][1] < threshold:
                hits = [(UNKNOWN, hits[0][1]), *hits][:top_k]
            answers[rel] = [{"name": n, "score": round(s, 4)} for n, s in hits]
        result = {"collection": name, "db": col.store.url, "threshold": threshold, "answers": answers,
                  "failed": failed, "set_aside": []}
        if json_out:
            write_json(json_out, result)
        return result
    finally:
        col.close()


def need_target(option: str, value: object) -> None:
    """Refuse a command given neither its file option nor ``--db`` with ``--collection``."""
    if value is None:
        raise FaceembedError(f"give {option}, or --db and --collection (a collection of a store)")


def _check_db_target(db_url: str | None, name: str | None, file_option: str, file_value: object) -> None:
    if not db_url or not name:
        raise FaceembedError("--db and --collection go together (a collection of a store)")
    if file_value is not None:
        raise FaceembedError(f"{file_option} and --db are alternatives: give one of them")
