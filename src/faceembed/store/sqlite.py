"""The SQLite backend (standard library): one file, WAL journal, ``synchronous=FULL`` (a committed transaction
is on disk before the call returns, so it survives kill -9 and power loss), a connection per thread, waits up to
``busy_timeout`` for another writer (process or thread)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from faceembed.errors import FaceembedError
from faceembed.store.records import Store
from faceembed.store.schema import SQLITE, migrate

BUSY_TIMEOUT_MS = 30_000


class SQLiteStore(Store):
    """A store in one SQLite file (its folder is created)."""

    dialect = SQLITE

    def __init__(self, path: str | Path, url: str | None = None):
        self.path = Path(path)
        super().__init__(url or f"sqlite:///{self.path}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FaceembedError(f"cannot create the store's folder ({exc.strerror})", self.path.parent) from None
        migrate(self)

    def _connect(self) -> Any:
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.DatabaseError as exc:
            raise FaceembedError(f"cannot open the SQLite store ({exc})", self.path) from None
        return conn

    def _begin(self, conn: Any, write: bool) -> Any:
        cursor = conn.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.DatabaseError as exc:
            raise FaceembedError(f"the SQLite store is not usable ({exc})", self.path) from None
        return cursor

    def _commit(self, conn: Any) -> None:
        conn.execute("COMMIT")

    def _rollback(self, conn: Any) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def lock_for_migration(self, tx) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` already holds the database's write lock."""
