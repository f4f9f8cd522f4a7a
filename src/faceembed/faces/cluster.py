"""People from unlabeled photos: every face of every photo under a folder, grouped without labels at the model
card's threshold for a false-accept rate, written as people.json (and contact sheets). ``cluster_folder`` is
what ``faceembed cluster`` runs; ``cluster_faces`` works on embeddings already made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from faceembed.errors import FaceembedError
from faceembed.faces.cluster_algos import check_algorithm, cluster_embeddings
from faceembed.faces.cluster_photos import PhotoFaces, embed_photo_folder, faces_cache_path, save_photo_faces
from faceembed.files import write_json

DEFAULT_FAR = 5e-4  # chosen on LFW View 1 training people (scripts/cluster_lfw.py select)
DEFAULT_ALGORITHM = "average"
LOW_QUALITY = "low quality"


def card_threshold(card: Any, far: float) -> float:
    """The card's calibrated cosine threshold at false-accept rate ``far``; between two calibrated rates,
    interpolated linearly in log10(FAR) (impostor-score quantiles are smooth there); outside them, an error."""
    import math

    from faceembed.errors import NoThresholdsError

    t = card.thresholds
    if t is None:
        raise NoThresholdsError(f"model {card.name!r} has no calibrated thresholds: run 'faceembed calibrate' first")
    points = sorted((float(k), float(v)) for k, v in t.far.items())
    if not 0 < far < 1:
        raise FaceembedError(f"--far must be between 0 and 1, not {far:g}")
    for (f0, t0), (f1, t1) in zip(points, points[1:] + points[-1:], strict=True):
        if f0 == far or f1 == far:
            return t0 if f0 == far else t1
        if f0 < far < f1:
            w = (math.log10(far) - math.log10(f0)) / (math.log10(f1) - math.log10(f0))
            return t0 + w * (t1 - t0)
    raise NoThresholdsError(f"FAR {far:g} is outside the card's calibrated range ({points[0][0]:g} to "
                            f"{points[-1][0]:g})")


def cluster_faces(embeddings: np.ndarray, threshold: float, algorithm: str = DEFAULT_ALGORITHM,
                  quality: np.ndarray | None = None, min_quality: float | None = None) -> np.ndarray:
    """Person label per face (0 = the largest person), -1 for faces of quality below ``min_quality`` (kept out
    of every person, so a blurry crop cannot join or bridge anyone)."""
    check_algorithm(algorithm)
    n = len(embeddings)
    keep = np.ones(n, bool) if quality is None or min_quality is None else np.asarray(quality) >= min_quality
    labels = np.full(n, -1, np.int64)
    if keep.any():
        labels[keep] = cluster_embeddings(np.asarray(embeddings)[keep], threshold, algorithm)
    return labels


def person_name(k: int) -> str:
    """``p0001`` for the largest person (``k = 0``)."""
    return f"p{k + 1:04d}"


def people_document(faces: PhotoFaces, labels: np.ndarray, meta: dict[str, Any] | None = None,
                    names: list[str] | None = None, min_quality: float | None = None) -> dict[str, Any]:
    """people.json: ``{"people": [{"person", "faces": [{"image", "box", "quality", "score"}]}], "unassigned":
    [{"image", "box", "reason"}], "meta"}``, people largest first (labels are numbered so), faces in photo order.
    ``names``: a person name per label (default p0001...)."""
    people: dict[int, list[dict]] = {}
    unassigned = list(faces.unassigned)
    for i, lab in enumerate(labels):
        if lab < 0:
            q = None if faces.quality is None else float(faces.quality[i])
            reason = LOW_QUALITY if min_quality is not None and q is not None and q < min_quality else "unassigned"
            unassigned.append({"image": faces.images[i], "box": faces.boxes[i], "reason": reason, "quality": q})
        else:
            people.setdefault(int(lab), []).append(faces.face(i))
    order = sorted(people, key=lambda k: (-len(people[k]), k))
    rows = [{"person": names[k] if names else person_name(j), "faces": people[k]} for j, k in enumerate(order)]
    return {"people": rows, "unassigned": unassigned, "meta": meta or {}}


def read_people(path: str | Path) -> dict[str, Any]:
    """A people.json, checked: every face in exactly one person or in unassigned (by image and box)."""
    import json

    from faceembed.errors import InputFormatError, MissingInputError

    path = Path(path)
    if not path.is_file():
        raise MissingInputError("people.json not found", path)
    try:
        doc = json.loads(path.read_text())
        seen = [(f["image"], tuple(f["box"] or ())) for p in doc["people"] for f in p["faces"]]
        seen += [(u["image"], tuple(u["box"] or ())) for u in doc["unassigned"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputFormatError(f"not a people.json ({exc})", path) from None
    if len(seen) != len(set(seen)):
        raise InputFormatError("a face is listed twice in people.json", path)
    return doc


def cluster_folder(photos: str | Path, out: str | Path, model: str | Path = "dlib-resnet", detector: str = "mtcnn",
                   no_face: str = "skip", far: float = DEFAULT_FAR, algorithm: str = DEFAULT_ALGORITHM,
                   min_quality: float | None = None, html: str | Path | None = None, progress: bool = False,
                   threads: int | None = None) -> dict[str, Any]:
    """Group every face of every photo under ``photos`` into people; write ``out`` (people.json, atomically)
    and, with ``html``, one contact sheet per person; returns a summary. The threshold is the model card's at
    ``far``; ``min_quality`` (PFE models) leaves faces of lower quality unassigned ("low quality")."""
    import time

    from faceembed.faces.analyzer import FaceAnalyzer
    from faceembed.faces.quality import check_min_quality

    check_algorithm(algorithm)
    photos = Path(photos)
    if not photos.is_dir():
        raise FaceembedError("PHOTOS must be a folder of photos", photos)
    analyzer = FaceAnalyzer(model, detector=detector, threads=threads)
    check_min_quality(analyzer.card, min_quality, model)
    threshold = card_threshold(analyzer.card, far)
    t0 = time.perf_counter()
    faces = embed_photo_folder(photos, analyzer, detector, no_face, progress)
    t1 = time.perf_counter()
    labels = cluster_faces(faces.embeddings, threshold, algorithm, faces.quality, min_quality)
    t2 = time.perf_counter()
    meta = {"photos": str(photos), "model": analyzer.card.name or str(model), "detector": detector,
            "no_face": no_face, "far": far, "threshold": threshold, "algorithm": algorithm,
            "min_quality": min_quality}
    doc = people_document(faces, labels, meta, min_quality=min_quality)
    write_json(out, doc)
    save_photo_faces(faces_cache_path(out), faces, meta)  # evaluate-clustering's peers run on these embeddings
    if html is not None:
        from faceembed.faces.cluster_sheets import write_contact_sheets

        write_contact_sheets(doc, photos, html)
    return {"people": len(doc["people"]), "faces": len(faces), "unassigned": len(doc["unassigned"]),
            "low_quality": sum(u["reason"] == LOW_QUALITY for u in doc["unassigned"]),
            "used_whole": int(sum(faces.whole)), "threshold": threshold, "far": far, "algorithm": algorithm,
            "out": str(out), "html": None if html is None else str(html),
            "seconds": {"embed": round(t1 - t0, 2), "cluster": round(t2 - t1, 3)}}
