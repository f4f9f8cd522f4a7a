"""People kept in a face store (SQLite or PostgreSQL, :mod:`faceembed.store`): incremental clustering of new
photos into them, ``--recluster``, and the corrections a user makes (rename, merge, split, "not X").

A person is a store subject. Clustering makes subjects ``p0001``... with ``named=False``; any correction marks the
people it touches as confirmed (``named=True``): a rename, both sides of a merge and of a split, and the person of
a "not X". ``recluster`` keeps confirmed people exactly as they are (their faces, their names) and re-clusters
only the other faces, which then join confirmed people by the linkage rule or form new people; "not X"
constraints are honoured by every later run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from faceembed.errors import FaceembedError, MissingInputError
from faceembed.faces.cluster import DEFAULT_ALGORITHM, DEFAULT_FAR, card_threshold
from faceembed.faces.cluster_assign import assign_faces

COLLECTION = "people"


def _store(db: Any) -> tuple[Any, bool]:
    from faceembed.store import open_store

    return (open_store(db), True) if isinstance(db, str | Path) else (db, False)


def people_collection(store: Any, collection: str, model: str | Path, far: float, algorithm: str) -> Any:
    """The store's people collection (created for ``model`` at ``far`` on first use); a collection of another
    model is refused (its embeddings would not compare)."""
    from faceembed.faces.collection import model_digest
    from faceembed.models.card_io import read_card
    from faceembed.models.registry import resolve_model

    digest = model_digest(model)
    try:
        info = store.collection(collection)
    except MissingInputError:
        card = read_card(resolve_model(model))
        info, _ = store.create_collection(collection, str(model), digest, int(card.embedding_size), far,
                                          card_threshold(card, far), {"kind": "people", "algorithm": algorithm})
        return info
    if info.model_digest != digest:
        raise FaceembedError(f"collection {collection!r} holds faces of model {info.model!r}, not of {model}")
    return info


def next_names(existing: set[str], count: int) -> list[str]:
    """``count`` fresh person names p0001, p0002... not in ``existing``."""
    names, k = [], 1
    while len(names) < count:
        name = f"p{k:04d}"
        if name not in existing:
            names.append(name)
        k += 1
    return names


def _constraints(store: Any, collection: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for face_id, subject in store.cannot_links(collection):
        out.setdefault(face_id, set()).add(subject)
    return out


def name_clusters(labels: np.ndarray, previous: list[str | None], taken: set[str]) -> dict[int, str]:
    """A name per cluster label: the previous person holding most of its old faces (each name used once,
    biggest overlap first), else a fresh p-number not in ``taken``."""
    from collections import Counter

    overlap = Counter((int(lab), p) for lab, p in zip(labels, previous, strict=True) if p is not None)
    names: dict[int, str] = {}
    used: set[str] = set()
    for (lab, p), _ in sorted(overlap.items(), key=lambda kv: (-kv[1], kv[0][0])):
        if lab not in names and p not in used:
            names[lab] = p
            used.add(p)
    unnamed = sorted(set(int(v) for v in labels) - set(names))
    for lab, fresh in zip(unnamed, next_names(taken | used, len(unnamed)), strict=True):
        names[lab] = fresh
    return names


def add_to_people(store: Any, collection: str, faces: Any, threshold: float, algorithm: str,
                  keep: np.ndarray) -> dict[str, int]:
    """Store the ``keep`` faces of ``faces`` (:class:`~faceembed.faces.cluster_photos.PhotoFaces`): they join
    confirmed people they match; the threshold-graph components they touch among the other faces are clustered
    again (:func:`~faceembed.faces.cluster_assign.update_people`), so the result is the full run's. Returns
    counts."""
    from faceembed.faces.cluster_assign import update_people
    from faceembed.store import NewFace

    m = store.matrix(collection)
    confirmed = {s["subject"] for s in store.subjects(collection) if s["named"]}
    fixed = np.asarray([s in confirmed for s in m.subjects], bool)
    rows = np.flatnonzero(keep)
    joined, ids, labels = update_people(m.embeddings, m.subjects, fixed, faces.embeddings[rows], threshold,
                                        algorithm)
    n_old = len(m.face_ids)
    names = name_clusters(labels, [m.subjects[i] if i < n_old else None for i in ids], set(m.subjects))
    target = {k: p for k, p in enumerate(joined) if p is not None}
    moves: dict[str, list[str]] = {}
    for i, lab in zip(ids, labels, strict=True):
        if i >= n_old:
            target[int(i) - n_old] = names[int(lab)]
        elif m.subjects[i] != names[int(lab)]:
            moves.setdefault(names[int(lab)], []).append(m.face_ids[i])
    for subject, face_ids in moves.items():
        store.move_faces(collection, face_ids, subject)
    new = []
    for k, i in enumerate(rows):
        q = None if faces.quality is None else float(faces.quality[i])
        sig = None if faces.sigma_sq is None else faces.sigma_sq[i]
        new.append(NewFace(target[k], faces.embeddings[i], sig, q, faces.boxes[i], image=faces.images[i]))
    if new:
        store.add_faces(collection, new, named=False)
    return {"joined_confirmed": len([p for p in joined if p is not None]), "reclustered_old_faces":
            int((ids < n_old).sum()), "old_faces_moved": sum(len(v) for v in moves.values()),
            "new_people": len(set(target.values()) - set(m.subjects))}


def recluster_people(store: Any, collection: str, threshold: float, algorithm: str) -> dict[str, int]:
    """Re-cluster every face outside the confirmed people; confirmed people stay exactly as they are."""
    m = store.matrix(collection)
    confirmed = {s["subject"] for s in store.subjects(collection) if s["named"]}
    fixed = np.asarray([s in confirmed for s in m.subjects], bool)
    loose = np.flatnonzero(~fixed)
    if not len(loose):
        return {"reclustered": 0, "joined_existing": 0, "new_people": 0}
    links = _constraints(store, collection)
    forbidden = {k: links[m.face_ids[i]] for k, i in enumerate(loose) if m.face_ids[i] in links}
    joined, fresh = assign_faces(m.embeddings[fixed], [s for s, f in zip(m.subjects, fixed, strict=True) if f],
                                 m.embeddings[loose], threshold, algorithm, forbidden)
    names = next_names(confirmed, int(fresh.max(initial=-1)) + 1)
    temp = {}
    for k, i in enumerate(loose):  # two passes through unique temporary names: p-names may swap owners
        target = joined[k] if joined[k] is not None else names[fresh[k]]
        temp.setdefault(target, []).append(m.face_ids[i])
    for n, ids in enumerate(temp.values()):
        store.move_faces(collection, ids, f"~recluster{n}")
    for n, target in enumerate(temp):
        store.rename_subject(collection, f"~recluster{n}", target)
        if target not in confirmed:
            store.set_named(collection, target, False)
    return {"reclustered": len(loose), "joined_existing": sum(j is not None for j in joined),
            "new_people": len(names)}


def cluster_into_store(photos: str | Path, db: Any, collection: str = COLLECTION, model: str | Path = "dlib-resnet",
                       detector: str = "mtcnn", no_face: str = "skip", far: float = DEFAULT_FAR,
                       algorithm: str = DEFAULT_ALGORITHM, min_quality: float | None = None,
                       recluster: bool = False, out: str | Path | None = None, progress: bool = False,
                       faces: Any = None) -> dict[str, Any]:
    """``faceembed cluster PHOTOS --db URL``: add the faces of ``photos`` not already in the store (by image
    path) to its people incrementally; ``recluster`` then re-clusters all unconfirmed faces. ``out``: the
    store's people as people.json. ``faces``: embeddings already made (a PhotoFaces), to skip embedding."""
    from faceembed.data.images import list_images
    from faceembed.faces.analyzer import FaceAnalyzer
    from faceembed.faces.cluster_photos import embed_photo_folder
    from faceembed.faces.quality import check_min_quality
    from faceembed.models.card_io import read_card
    from faceembed.models.registry import resolve_model

    card = read_card(resolve_model(model))
    check_min_quality(card, min_quality, model)
    threshold = card_threshold(card, far)
    store, own = _store(db)
    try:
        people_collection(store, collection, model, far, algorithm)
        if faces is None and photos is not None:
            have = {f.image for f in store.faces(collection)}
            todo = [r for r in list_images(photos) if r not in have]
            faces = embed_photo_folder(photos, FaceAnalyzer(model, detector=detector), detector, no_face, progress,
                                       relpaths=todo) if todo else None
        summary: dict[str, Any] = {"collection": collection, "threshold": threshold, "far": far}
        if faces is not None and len(faces):
            keep = np.ones(len(faces), bool) if faces.quality is None or min_quality is None else \
                faces.quality >= min_quality
            summary.update(add_to_people(store, collection, faces, threshold, algorithm, keep))
            summary["low_quality"] = int((~keep).sum())
        if recluster:
            summary["recluster"] = recluster_people(store, collection, threshold, algorithm)
        summary["people"] = len(store.subjects(collection))
        summary["faces"] = len(store.matrix(collection).face_ids)
        if out is not None:
            from faceembed.files import write_json

            write_json(out, store_people_document(store, collection))
        return summary
    finally:
        if own:
            store.close()


def store_people_document(store: Any, collection: str = COLLECTION) -> dict[str, Any]:
    """The store's people as people.json (people largest first, each face with its ``face_id``)."""
    people: dict[str, list[dict]] = {}
    for f in store.faces(collection):
        people.setdefault(f.subject, []).append({"image": f.image, "box": f.box, "quality": f.quality,
                                                 "face_id": f.face_id})
    order = sorted(people, key=lambda s: (-len(people[s]), s))
    named = {s["subject"]: s["named"] for s in store.subjects(collection)}
    return {"people": [{"person": s, "named": named.get(s, False), "faces": people[s]} for s in order],
            "unassigned": [], "meta": {"collection": collection, "store": store.url}}
