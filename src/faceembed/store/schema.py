"""The store's tables, written once in a dialect-neutral SQL and rendered for SQLite or PostgreSQL, and the
migrations that bring a database to :data:`LATEST` (table ``schema_version``, one row).

SQL in the store is written with ``?`` placeholders and ``{blob}`` / ``{float}`` / ``{serial}`` type slots;
:class:`Dialect` turns it into the backend's text. Every value reaches the database as a query parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

from faceembed.errors import FaceembedError


@dataclass(frozen=True)
class Dialect:
    """How one backend spells what the portable SQL leaves open."""

    name: str
    placeholder: str
    blob: str
    float: str
    serial: str

    def sql(self, text: str) -> str:
        """``text`` with its type slots filled and its ``?`` placeholders in this backend's style."""
        text = text.replace("{blob}", self.blob).replace("{float}", self.float).replace("{serial}", self.serial)
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)


SQLITE = Dialect("sqlite", "?", "BLOB", "REAL", "INTEGER PRIMARY KEY AUTOINCREMENT")
POSTGRES = Dialect("postgresql", "%s", "BYTEA", "DOUBLE PRECISION", "BIGSERIAL PRIMARY KEY")

#: migration number -> its statements; a database at version v gets every migration above v, each in its own
#: transaction together with the new version number.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE collections (
            name TEXT PRIMARY KEY, model TEXT NOT NULL, model_digest TEXT NOT NULL, dim INTEGER NOT NULL,
            far {float} NOT NULL, threshold {float}, created {float} NOT NULL, meta TEXT NOT NULL,
            version BIGINT NOT NULL DEFAULT 0)""",
        """CREATE TABLE api_keys (
            key_id TEXT PRIMARY KEY, collection TEXT NOT NULL, prefix TEXT NOT NULL, key_hash TEXT NOT NULL,
            created {float} NOT NULL, revoked INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX api_keys_prefix ON api_keys (prefix)",
        """CREATE TABLE subjects (
            collection TEXT NOT NULL, subject TEXT NOT NULL, named INTEGER NOT NULL DEFAULT 1,
            PRIMARY KEY (collection, subject))""",
        """CREATE TABLE faces (
            seq {serial}, face_id TEXT NOT NULL UNIQUE, collection TEXT NOT NULL, subject TEXT NOT NULL,
            embedding {blob} NOT NULL, sigma_sq {blob}, quality {float}, box TEXT, landmarks TEXT,
            photo_digest TEXT, image TEXT, created {float} NOT NULL)""",
        "CREATE INDEX faces_subject ON faces (collection, subject)",
    ],
    2: [
        """CREATE TABLE cannot_links (
            collection TEXT NOT NULL, face_id TEXT NOT NULL, subject TEXT NOT NULL,
            PRIMARY KEY (collection, face_id, subject))""",
    ],
}
LATEST = max(MIGRATIONS)

CREATE_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"


def pending(current: int, upto: int = LATEST) -> list[int]:
    """The migrations a database at ``current`` needs to reach ``upto``; a database newer than this faceembed
    is refused (it may hold columns this code would lose)."""
    if current > LATEST:
        raise FaceembedError(f"the store's schema is version {current}, newer than this faceembed knows "
                             f"({LATEST}): upgrade faceembed")
    return [v for v in sorted(MIGRATIONS) if current < v <= upto]


def migrate(store, upto: int = LATEST) -> int:
    """Bring ``store``'s schema to ``upto`` (default: the latest); returns the version it is at. Safe when several
    processes open the same database at once: each migration runs under the backend's write lock and re-reads the
    version first."""
    with store.transaction(write=True) as tx:
        store.lock_for_migration(tx)
        tx.execute(CREATE_VERSION_TABLE)
    while True:
        with store.transaction(write=True) as tx:
            store.lock_for_migration(tx)
            row = tx.execute("SELECT version FROM schema_version").fetchone()
            current = int(row[0]) if row else 0
            todo = pending(current, upto)
            if not todo:
                return current
            version = todo[0]
            for statement in MIGRATIONS[version]:
                tx.execute(statement)
            if row is None:
                tx.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            else:
                tx.execute("UPDATE schema_version SET version = ?", (version,))


def schema_version(store) -> int:
    """The version ``store``'s database is at (0: no schema yet)."""
    with store.transaction() as tx:
        row = tx.execute("SELECT version FROM schema_version").fetchone()
    return int(row[0]) if row else 0
