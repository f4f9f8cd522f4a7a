"""The store's backend-neutral half: transactions over one SQL dialect, collections and their API keys. The
subject and face operations are in :mod:`faceembed.store.records`; the connections in :mod:`.sqlite` and
:mod:`.postgres`."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from faceembed.errors import FaceembedError, MissingInputError
from faceembed.store import keys as apikeys
from faceembed.store.schema import Dialect
from faceembed.store.types import CollectionInfo, check_collection_name

_COLLECTION_COLUMNS = "name, model, model_digest, dim, far, threshold, created, meta"


class Tx:
    """One transaction's cursor: portable SQL in (see :class:`~faceembed.store.schema.Dialect`), rows out."""

    def __init__(self, cursor: Any, dialect: Dialect):
        self.cursor, self.dialect = cursor, dialect

    def execute(self, sql: str, params: tuple | list = ()) -> Any:
        self.cursor.execute(self.dialect.sql(sql), tuple(params))
        return self.cursor


class BaseStore:
    """What both backends share. A subclass provides ``_connect()`` (a new DB-API connection), ``_begin(conn,
    write)`` / ``_commit`` / ``_rollback``, and ``lock_for_migration(tx)``."""

    dialect: Dialect

    def __init__(self, url: str):
        self.url = url
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    # -- connections and transactions -------------------------------------------------------------------------
    def _connection(self) -> Any:
        if self._closed:
            raise FaceembedError(f"the store {self.url} is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None or self._is_broken(conn):
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _is_broken(self, conn: Any) -> bool:
        return False

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[Tx]:
        """One transaction on this thread's connection: committed (durably) when the block ends, rolled back when
        it raises. ``write=True`` takes the backend's write lock at the start (SQLite ``BEGIN IMMEDIATE``)."""
        conn = self._connection()
        cursor = self._begin(conn, write)
        try:
            yield Tx(cursor, self.dialect)
        except BaseException:
            self._rollback(conn)
            raise
        self._commit(conn)

    def close(self) -> None:
        """Close every connection this store opened (on any thread)."""
        self._closed = True
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(Exception):  # a connection another thread broke: nothing left to close
                conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # -- collections ------------------------------------------------------------------------------------------
    def create_collection(self, name: str, model: str, model_digest: str, dim: int, far: float = 1e-3,
                          threshold: float | None = None, meta: dict | None = None) -> tuple[CollectionInfo, str]:
        """A new collection bound to ``model`` (its card digest) and embedding size ``dim``, with its first API
        key (plaintext, returned once). An existing name is an error."""
        check_collection_name(name)
        if not isinstance(dim, int) or dim < 1:
            raise FaceembedError(f"a collection's embedding size must be a positive whole number, not {dim!r}")
        info = CollectionInfo(name, str(model), str(model_digest), int(dim), float(far),
                              None if threshold is None else float(threshold), time.time(), dict(meta or {}))
        with self.transaction(write=True) as tx:
            if tx.execute("SELECT 1 FROM collections WHERE name = ?", (name,)).fetchone():
                raise FaceembedError(f"a collection named {name!r} already exists in {self.url}")
            tx.execute(f"INSERT INTO collections ({_COLLECTION_COLUMNS}, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                       (info.name, info.model, info.model_digest, info.dim, info.far, info.threshold, info.created,
                        json.dumps(info.meta)))
            key = self._insert_key(tx, name)
        return info, key

    def collection(self, name: str) -> CollectionInfo:
        """The collection ``name`` (MissingInputError when there is none)."""
        with self.transaction() as tx:
            row = tx.execute(f"SELECT {_COLLECTION_COLUMNS} FROM collections WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise MissingInputError(f"no collection named {name!r:.120} in {self.url}")
        return _info(row)

    def collections(self) -> list[CollectionInfo]:
        """Every collection, by name."""
        with self.transaction() as tx:
            rows = tx.execute(f"SELECT {_COLLECTION_COLUMNS} FROM collections ORDER BY name").fetchall()
        return [_info(r) for r in rows]

    def delete_collection(self, name: str) -> None:
        """Remove a collection with its subjects, faces, constraints and keys."""
        with self.transaction(write=True) as tx:
            if tx.execute("DELETE FROM collections WHERE name = ?", (name,)).rowcount == 0:
                raise MissingInputError(f"no collection named {name!r:.120} in {self.url}")
            for table in ("api_keys", "subjects", "faces", "cannot_links"):
                tx.execute(f"DELETE FROM {table} WHERE collection = ?", (name,))

    def version(self, collection: str) -> int:
        """The collection's change counter: bumped by every write to it, read from the database each call."""
        with self.transaction() as tx:
            row = tx.execute("SELECT version FROM collections WHERE name = ?", (collection,)).fetchone()
        if row is None:
            raise MissingInputError(f"no collection named {collection!r:.120} in {self.url}")
        return int(row[0])

    def _bump(self, tx: Tx, collection: str) -> None:
        """Count a write to ``collection`` (first statement of every write: on PostgreSQL it also locks the
        collection's row, so writes to one collection run one after another)."""
        if tx.execute("UPDATE collections SET version = version + 1 WHERE name = ?", (collection,)).rowcount == 0:
            raise MissingInputError(f"no collection named {collection!r:.120} in {self.url}")

    # -- API keys ---------------------------------------------------------------------------------------------
    def _insert_key(self, tx: Tx, collection: str) -> str:
        key = apikeys.new_key()
        tx.execute("INSERT INTO api_keys (key_id, collection, prefix, key_hash, created, revoked) "
                   "VALUES (?, ?, ?, ?, ?, 0)",
                   (apikeys.new_key_id(), collection, apikeys.key_prefix(key), apikeys.key_hash(key), time.time()))
        return key

    def create_key(self, name: str) -> str:
        """Another API key for collection ``name`` (plaintext, returned once)."""
        with self.transaction(write=True) as tx:
            if not tx.execute("SELECT 1 FROM collections WHERE name = ?", (name,)).fetchone():
                raise MissingInputError(f"no collection named {name!r:.120} in {self.url}")
            return self._insert_key(tx, name)

    def keys(self, name: str) -> list[dict]:
        """The collection's keys: ``{"key_id", "prefix", "created", "revoked"}``, oldest first (never the key)."""
        self.collection(name)
        with self.transaction() as tx:
            rows = tx.execute("SELECT key_id, prefix, created, revoked FROM api_keys WHERE collection = ? "
                              "ORDER BY created, key_id", (name,)).fetchall()
        return [{"key_id": r[0], "prefix": r[1], "created": float(r[2]), "revoked": bool(r[3])} for r in rows]

    def revoke_key(self, name: str, key_id: str) -> None:
        """Revoke a key of collection ``name``: it opens nothing from now on."""
        with self.transaction(write=True) as tx:
            n = tx.execute("UPDATE api_keys SET revoked = 1 WHERE collection = ? AND key_id = ?",
                           (name, key_id)).rowcount
        if n == 0:
            raise MissingInputError(f"no key {key_id!r:.40} in collection {name!r:.120}")

    def collection_for_key(self, api_key: str) -> CollectionInfo | None:
        """The collection an API key opens; None for an unknown or revoked key."""
        if not isinstance(api_key, str) or len(api_key) < apikeys.PREFIX_CHARS:
            return None
        digest = apikeys.key_hash(api_key)
        with self.transaction() as tx:
            rows = tx.execute("SELECT collection, key_hash, revoked FROM api_keys WHERE prefix = ?",
                              (apikeys.key_prefix(api_key),)).fetchall()
        found = None
        for collection, stored, revoked in rows:  # every candidate compared, in constant time each
            if apikeys.same_hash(stored, digest) and not revoked:
                found = collection
        if found is None:
            return None
        try:
            return self.collection(found)
        except MissingInputError:
            return None


def _info(row: tuple) -> CollectionInfo:
    name, model, digest, dim, far, threshold, created, meta = row
    return CollectionInfo(name, model, digest, int(dim), float(far), None if threshold is None else float(threshold),
                          float(created), json.loads(meta) if meta else {})
