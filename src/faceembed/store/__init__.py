"""The persistent face store behind collections and ``faceembed serve``: collections (bound to one model) ->
subjects -> faces, with API keys, on SQLite (one file, the default) or PostgreSQL (several processes or
machines), and :class:`CollectionIndex`, the in-memory search kept current across processes.

URLs: ``sqlite:///relative/or/absolute.db`` (``sqlite:////abs/path.db`` also works), a bare path ending
``.db`` / ``.sqlite`` / ``.sqlite3``, or ``postgresql://user@host:port/dbname`` (``postgres://`` too).
"""

from __future__ import annotations

from pathlib import Path

from faceembed.errors import FaceembedError
from faceembed.store.index import CollectionIndex
from faceembed.store.records import Store
from faceembed.store.types import CollectionInfo, FaceMatrix, FaceRow, NewFace

__all__ = ["open_store", "Store", "CollectionInfo", "NewFace", "FaceRow", "FaceMatrix", "CollectionIndex",
           "sqlite_path"]

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL or bare path, else None."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    if "://" not in url and Path(url).suffix.lower() in SQLITE_SUFFIXES:
        return Path(url)
    return None


def open_store(url: str | Path) -> Store:
    """Open (creating or migrating its schema) the store at ``url``; see the module docstring for the forms."""
    url = str(url)
    path = sqlite_path(url)
    if path is not None:
        from faceembed.store.sqlite import SQLiteStore

        if url in ("sqlite:///", "sqlite:////"):
            raise FaceembedError("a sqlite:/// URL needs a file path, e.g. sqlite:///faces.db")
        return SQLiteStore(path, url if url.startswith("sqlite:") else None)
    if url.startswith(("postgresql://", "postgres://")):
        from faceembed.store.postgres import PostgresStore

        return PostgresStore(url)
    raise FaceembedError(f"unknown store URL {url!r:.200}: use sqlite:///path.db, a path ending .db, or "
                         "postgresql://user@host:port/dbname")
