"""Corrections to the people in a store (``faceembed people ...``): list, rename, merge, split, "not X". Each is
one store write (or a few), confirms the people it touches (see :mod:`faceembed.faces.people_store`) and is
therefore kept by later incremental runs and by ``--recluster``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from faceembed.errors import FaceembedError, MissingInputError
from faceembed.faces.people_store import COLLECTION, _store, next_names


def _with_store(db: Any, fn: Any) -> Any:
    store, own = _store(db)
    try:
        return fn(store)
    finally:
        if own:
            store.close()


def _require(store: Any, collection: str, person: str) -> None:
    if person not in {s["subject"] for s in store.subjects(collection)}:
        raise MissingInputError(f"no person {person!r:.120} in collection {collection!r}")


def list_people(db: str | Path | Any, collection: str = COLLECTION) -> list[dict[str, Any]]:
    """``[{"person", "faces", "named", "face_ids"}]``, largest first."""
    def run(store: Any) -> list[dict[str, Any]]:
        ids: dict[str, list[str]] = {}
        for f in store.faces(collection):
            ids.setdefault(f.subject, []).append(f.face_id)
        rows = [{"person": s["subject"], "faces": s["faces"], "named": s["named"],
                 "face_ids": ids.get(s["subject"], [])} for s in store.subjects(collection)]
        return sorted(rows, key=lambda r: (-r["faces"], r["person"]))

    return _with_store(db, run)


def rename_person(db: str | Path | Any, old: str, new: str, collection: str = COLLECTION) -> dict[str, Any]:
    """Give person ``old`` the name ``new`` (into an existing person: a merge)."""
    def run(store: Any) -> dict[str, Any]:
        _require(store, collection, old)
        store.rename_subject(collection, old, new)
        return {"renamed": old, "to": new}

    return _with_store(db, run)


def merge_people(db: str | Path | Any, a: str, b: str, collection: str = COLLECTION) -> dict[str, Any]:
    """Move every face of ``b`` into ``a`` (``a`` keeps its name, confirmed)."""
    if a == b:
        raise FaceembedError(f"cannot merge {a!r} with itself")

    def run(store: Any) -> dict[str, Any]:
        _require(store, collection, a)
        _require(store, collection, b)
        store.rename_subject(collection, b, a)
        return {"merged": b, "into": a}

    return _with_store(db, run)


def split_person(db: str | Path | Any, person: str, face_ids: Sequence[str], name: str | None = None,
                 collection: str = COLLECTION) -> dict[str, Any]:
    """Move ``face_ids`` (faces of ``person``) to a new person (``name``, default the next p-number); both
    people are confirmed."""
    def run(store: Any) -> dict[str, Any]:
        _require(store, collection, person)
        mine = {f.face_id for f in store.faces(collection, person)}
        bad = [f for f in face_ids if f not in mine]
        if bad or not face_ids:
            raise FaceembedError(f"--faces must name faces of {person!r}; not: {', '.join(bad) or '(none given)'}")
        existing = {s["subject"] for s in store.subjects(collection)}
        target = name or next_names(existing, 1)[0]
        if target in existing:
            raise FaceembedError(f"person {target!r} exists: split into a new name (or merge afterwards)")
        store.move_faces(collection, list(face_ids), target)
        store.set_named(collection, target, True)
        if len(mine) > len(set(face_ids)):
            store.set_named(collection, person, True)
        return {"split": person, "into": target, "faces": len(face_ids)}

    return _with_store(db, run)


def not_person(db: str | Path | Any, person: str, face_id: str, collection: str = COLLECTION) -> dict[str, Any]:
    """"Face ``face_id`` is not ``person``": recorded as a constraint (kept across renames and runs); when the
    face is in that person, it leaves it for a person of its own. ``person`` is confirmed."""
    def run(store: Any) -> dict[str, Any]:
        _require(store, collection, person)
        store.add_cannot_link(collection, face_id, person)
        moved_to = None
        if face_id in {f.face_id for f in store.faces(collection, person)}:
            moved_to = next_names({s["subject"] for s in store.subjects(collection)}, 1)[0]
            store.move_faces(collection, [face_id], moved_to)
        if person in {s["subject"] for s in store.subjects(collection)}:
            store.set_named(collection, person, True)
        return {"face": face_id, "not": person, "moved_to": moved_to}

    return _with_store(db, run)
