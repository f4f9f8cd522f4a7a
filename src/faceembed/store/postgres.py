"""The PostgreSQL backend (psycopg 3): a connection per thread, autocommit off, one transaction per write
(``synchronous_commit`` is the server's: on by default, so a commit is durable when it returns). Several processes
or machines may share one database; writes to one collection are serialised by its row lock."""

from __future__ import annotations

from typing import Any

from faceembed.errors import BackendUnavailableError, FaceembedError
from faceembed.store.records import Store
from faceembed.store.schema import POSTGRES, migrate

MIGRATION_LOCK = 0x66616365  # any fixed number: pg_advisory_xact_lock's key for schema migrations
CONNECT_TIMEOUT_S = 10


def _psycopg():
    try:
        import psycopg
    except ImportError:
        raise BackendUnavailableError("a postgresql:// store needs psycopg 3: pip install 'psycopg[binary]'") \
            from None
    return psycopg


def _redacted(url: str) -> str:
    """The URL without a password (for messages)."""
    head, sep, tail = url.partition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, creds = head.partition("//")
    return f"{scheme}//{creds.split(':', 1)[0]}:***@{tail}"


class PostgresStore(Store):
    """A store in a PostgreSQL database (it must exist; the tables are created in it)."""

    dialect = POSTGRES

    def __init__(self, url: str):
        super().__init__(url)
        self._dsn = url
        self.url = _redacted(url)
        migrate(self)

    def _connect(self) -> Any:
        psycopg = _psycopg()
        try:
            return psycopg.connect(self._dsn, autocommit=False, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise FaceembedError(f"cannot connect to the PostgreSQL store {self.url} ({first[:200]})") from None

    def _is_broken(self, conn: Any) -> bool:
        return bool(conn.closed or conn.broken)

    def _begin(self, conn: Any, write: bool) -> Any:
        return conn.cursor()  # psycopg opens the transaction at the first statement

    def _commit(self, conn: Any) -> None:
        conn.commit()

    def _rollback(self, conn: Any) -> None:
        if not conn.closed:
            conn.rollback()

    def lock_for_migration(self, tx) -> None:
        """Serialise concurrent first opens: one process migrates, the others wait and find it done."""
        tx.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
