"""Shared fixtures: ``pg_server`` (a throwaway PostgreSQL 15 server for the session) and ``pg_url`` (a fresh
empty database on it per test); both skip with the reason when PostgreSQL's binaries are absent."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

_databases = itertools.count()


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server for the whole session (tests using it are marked ``postgres``)."""
    from pg_server import PostgresServer, missing_reason

    why = missing_reason()
    if why:
        pytest.skip(why)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg 3 is not installed (pip install 'psycopg[binary]')")
    with PostgresServer() as server:
        yield server


@pytest.fixture
def pg_url(pg_server) -> str:
    """The URL of a new empty database on the session's server."""
    return pg_server.fresh_database(f"t{next(_databases)}")
