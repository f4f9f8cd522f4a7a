"""Subjects and faces: every write is one transaction that first bumps the collection's change counter.
A subject exists while it has faces: it is created by its first face and dropped with its last one."""

from __future__ import annotations

import json
import time
import uuid

import numpy as np

from faceembed.errors import MissingInputError, ShapeMismatchError
from faceembed.store.base import BaseStore, Tx
from faceembed.store.types import FaceMatrix, FaceRow, NewFace, check_subject

_FACE_COLUMNS = "face_id, subject, embedding, sigma_sq, quality, box, landmarks, photo_digest, image, created"


class Store(BaseStore):
    """A face store: collections -> subjects -> faces, on SQLite or PostgreSQL (see :func:`open_store`)."""

    def _dim(self, tx: Tx, collection: str) -> int:
        row = tx.execute("SELECT dim FROM collections WHERE name = ?", (collection,)).fetchone()
        if row is None:
            raise MissingInputError(f"no collection named {collection!r:.120} in {self.url}")
        return int(row[0])

    def add_faces(self, collection: str, faces: list[NewFace], named: bool = True) -> list[str]:
        """Store ``faces`` (one transaction, durable when this returns) and return their new ids. A subject is
        created by its first face (``named``: False for clustering's automatic names). An embedding (or sigma^2)
        of another size than the collection's is a ShapeMismatchError, and nothing is written."""
        rows = [_face_params(f) for f in faces]
        with self.transaction(write=True) as tx:
            self._bump(tx, collection)
            dim = self._dim(tx, collection)
            for f, (emb, sig, _) in zip(faces, rows, strict=True):
                if emb.size != dim or (sig is not None and sig.size != dim):
                    what = "sigma_sq" if emb.size == dim else "embedding"
                    size = (sig if emb.size == dim else emb).size
                    raise ShapeMismatchError(f"{what} of size {size} for collection {collection!r} of dimension "
                                             f"{dim} (subject {f.subject!r:.80})")
            ids, now = [], time.time()
            for f, (emb, sig, extra) in zip(faces, rows, strict=True):
                face_id = uuid.uuid4().hex
                tx.execute("INSERT INTO subjects (collection, subject, named) VALUES (?, ?, ?) "
                           "ON CONFLICT (collection, subject) DO NOTHING", (collection, f.subject, int(named)))
                tx.execute(f"INSERT INTO faces (collection, {_FACE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (collection, face_id, f.subject, emb.tobytes(), None if sig is None else sig.tobytes(),
                            *extra, now))
                ids.append(face_id)
        return ids

    def subjects(self, collection: str) -> list[dict]:
        """``[{"subject", "faces", "named"}]`` sorted by subject."""
        self.collection(collection)
        with self.transaction() as tx:
            rows = tx.execute("SELECT s.subject, s.named, COUNT(f.face_id) FROM subjects s LEFT JOIN faces f "
                              "ON f.collection = s.collection AND f.subject = s.subject WHERE s.collection = ? "
                              "GROUP BY s.subject, s.named", (collection,)).fetchall()
        return sorted(({"subject": s, "faces": int(n), "named": bool(named)} for s, named, n in rows),
                      key=lambda d: d["subject"])

    def _require_subject(self, tx: Tx, collection: str, subject: str) -> None:
        if not tx.execute("SELECT 1 FROM subjects WHERE collection = ? AND subject = ?",
                          (collection, subject)).fetchone():
            raise MissingInputError(f"no subject {subject!r:.120} in collection {collection!r}")

    def rename_subject(self, collection: str, old: str, new: str) -> None:
        """Rename ``old`` to ``new``; into an existing subject it merges. The result is named; cannot-links
        follow the faces' subject."""
        check_subject(new)
        with self.transaction(write=True) as tx:
            self._bump(tx, collection)
            self._require_subject(tx, collection, old)
            tx.execute("INSERT INTO subjects (collection, subject, named) VALUES (?, ?, 1) "
                       "ON CONFLICT (collection, subject) DO UPDATE SET named = 1", (collection, new))
            if new == old:
                return
            tx.execute("UPDATE faces SET subject = ? WHERE collection = ? AND subject = ?", (new, collection, old))
            tx.execute("INSERT INTO cannot_links (collection, face_id, subject) SELECT collection, face_id, ? "
                       "FROM cannot_links WHERE collection = ? AND subject = ? "
                       "ON CONFLICT (collection, face_id, subject) DO NOTHING", (new, collection, old))
            tx.execute("DELETE FROM cannot_links WHERE collection = ? AND subject = ?", (collection, old))
            tx.execute("DELETE FROM subjects WHERE collection = ? AND subject = ?", (collection, old))

    def set_named(self, collection: str, subject: str, named: bool) -> None:
        """Mark a subject as named by a person (True) or made up by clustering (False)."""
        with self.transaction(write=True) as tx:
            self._bump(tx, collection)
            self._require_subject(tx, collection, subject)
            tx.execute("UPDATE subjects SET named = ? WHERE collection = ? AND subject = ?",
                       (int(named), collection, subject))

    def delete_subject(self, collection: str, subject: str) -> None:
        """Remove a subject with its faces and the constraints on them."""
        with self.transaction(write=True) as tx:
            self._bump(tx, collection)
            self._require_subject(tx, collection, subject)
            tx.execute("DELETE FROM cannot_links WHERE collection = ? AND (subject = ? OR face_id IN "
                       "(SELECT face_id FROM faces WHERE collection = ? AND subject = ?))",
                       (collection, subject, collection, subject))
            tx.execute("DELETE FROM faces WHERE collection = ? AND subject = ?", (collection, subject))
            tx.execute("DELETE FROM subjects WHERE collection = ? AND subject = ?", (collection, subject))

    def delete_face(self, collection: str, face_id: str) -> None:
        """Remove one face (and its subject when it was the last one)."""
        with self.transaction(write=True) as tx:
            self._bump(tx, collection)
            row = tx.execute("SELECT subject FROM faces WHERE collection = ? AND face_id = ?",
                             (collection, face_id)).fetchone()
            if row is None:
                raise MissingInputError(f"no face {face_id!r:.80} in collection {collection!r}")
            tx.execute("DELETE FROM faces WHERE collection = ? AND face_id = ?", (collection, face_id))
            tx.execute("DELETE FROM cannot_links WHERE collection = ? AND face_id = ?", (collection, face_id))
            _drop_if_empty(tx, collection, [row[0]])

    def move_faces(self, collection: str, face_ids: list[str], subject: str) -> None:
        """Move faces to ``subject`` (created, not named, when needed); subjects left without faces are dropped."""
        check_subject(subject)
        with self.transaction(write=True) as tx:
            self._bump(tx, collection)
            old = set()
            for face_id in face_ids:
                row = tx.execute("SELECT subject FROM faces WHERE collection = ? AND face_id = ?",
                                 (collection, face_id)).fetchone()
                if row is None:
                    raise MissingInputError(f"no face {face_id!r:.80} in collection {collection!r}")
                old.add(row[0])
            tx.execute("INSERT INTO subjects (collection, subject, named) VALUES (?, ?, 0) "
                       "ON CONFLICT (collection, subject) DO NOTHING", (collection, subject))
            for face_id in face_ids:
                tx.execute("UPDATE faces SET subject = ? WHERE collection = ? AND face_id = ?",
                           (subject, collection, face_id))
            _drop_if_empty(tx, collection, sorted(old - {subject}))

    def faces(self, collection: str, subject: str | None = None) -> list[FaceRow]:
        """The collection's faces (of one subject), in the order they were added."""
        self.collection(collection)
        where, params = "collection = ?", [collection]
        if subject is not None:
            where, params = where + " AND subject = ?", params + [subject]
        with self.transaction() as tx:
            rows = tx.execute(f"SELECT {_FACE_COLUMNS} FROM faces WHERE {where} ORDER BY seq", params).fetchall()
        return [_row(r) for r in rows]

    def matrix(self, collection: str) -> FaceMatrix:
        """Every face's id, subject, embedding and sigma^2 as arrays, with the change counter read first."""
        with self.transaction() as tx:
            row = tx.execute("SELECT version, dim FROM collections WHERE name = ?", (collection,)).fetchone()
            if row is None:
                raise MissingInputError(f"no collection named {collection!r:.120} in {self.url}")
            rows = tx.execute("SELECT face_id, subject, embedding, sigma_sq FROM faces WHERE collection = ? "
                              "ORDER BY seq", (collection,)).fetchall()
        version, dim = int(row[0]), int(row[1])
        emb = np.frombuffer(b"".join(bytes(r[2]) for r in rows), np.float32).reshape(len(rows), dim)
        sig = None
        if rows and all(r[3] is not None for r in rows):
            sig = np.frombuffer(b"".join(bytes(r[3]) for r in rows), np.float32).reshape(len(rows), dim)
        return FaceMatrix([r[0] for r in rows], [r[1] for r in rows], emb.copy(), None if sig is None else sig.copy(),
                          version)

    def add_cannot_link(self, collection: str, face_id: str, subject: str) -> None:
        """Record "this face is not ``subject``" (kept when the subject is renamed or merged)."""
        check_subject(subject)
        with self.transaction(write=True) as tx:
            self._bump(tx, collection)
            if not tx.execute("SELECT 1 FROM faces WHERE collection = ? AND face_id = ?",
                              (collection, face_id)).fetchone():
                raise MissingInputError(f"no face {face_id!r:.80} in collection {collection!r}")
            tx.execute("INSERT INTO cannot_links (collection, face_id, subject) VALUES (?, ?, ?) "
                       "ON CONFLICT (collection, face_id, subject) DO NOTHING", (collection, face_id, subject))

    def cannot_links(self, collection: str) -> list[tuple[str, str]]:
        """Every ``(face_id, subject)`` constraint of the collection, sorted."""
        self.collection(collection)
        with self.transaction() as tx:
            rows = tx.execute("SELECT face_id, subject FROM cannot_links WHERE collection = ? "
                              "ORDER BY face_id, subject", (collection,)).fetchall()
        return [(r[0], r[1]) for r in rows]


def _drop_if_empty(tx: Tx, collection: str, subjects: list[str]) -> None:
    for s in subjects:
        if not tx.execute("SELECT 1 FROM faces WHERE collection = ? AND subject = ?", (collection, s)).fetchone():
            tx.execute("DELETE FROM subjects WHERE collection = ? AND subject = ?", (collection, s))


def _vector(v, name: str) -> np.ndarray:
    a = np.ascontiguousarray(np.asarray(v, dtype="<f4")).reshape(-1)
    if not np.isfinite(a).all():
        raise ShapeMismatchError(f"{name} holds NaN or Inf")
    return a


def _face_params(f: NewFace) -> tuple[np.ndarray, np.ndarray | None, tuple]:
    """(embedding, sigma^2 as little-endian float32, the other columns) of a new face, checked."""
    check_subject(f.subject)
    emb = _vector(f.embedding, "embedding")
    sig = None if f.sigma_sq is None else _vector(f.sigma_sq, "sigma_sq")
    extra = (None if f.quality is None else float(f.quality),
             None if f.box is None else json.dumps([float(x) for x in f.box]),
             None if f.landmarks is None else json.dumps(np.asarray(f.landmarks, float).tolist()),
             f.photo_digest, f.image)
    return emb, sig, extra


def _row(r: tuple) -> FaceRow:
    face_id, subject, emb, sig, quality, box, landmarks, digest, image, created = r
    return FaceRow(face_id, subject, np.frombuffer(bytes(emb), "<f4").astype(np.float32),
                   None if sig is None else np.frombuffer(bytes(sig), "<f4").astype(np.float32),
                   None if quality is None else float(quality), None if box is None else json.loads(box),
                   None if landmarks is None else json.loads(landmarks), digest, image, float(created))
