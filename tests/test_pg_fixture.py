"""The PostgreSQL test fixture drops its database even while sessions of ours hold it."""
from __future__ import annotations

import psycopg

from tests.conftest import PG_ADMIN, drop_pg_database, fresh_pg_database


def exists(name: str) -> bool:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                             (name,)).fetchone() is not None


def test_drop_ends_our_open_sessions(pg_ready: str) -> None:
    with fresh_pg_database("ppec_drop") as url:
        name = url.rsplit("/", 1)[1]
        held = psycopg.connect(url, autocommit=True)   # a test that forgot to close
        held.execute("CREATE TABLE t (a int)")
        assert exists(name)
    assert not exists(name)
    assert _dead(held)   # ended by the drop, not left to block it


def _dead(conn: psycopg.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


def test_drop_of_a_missing_database_is_quiet(pg_ready: str) -> None:
    drop_pg_database("ppec_never_made")
    assert not exists("ppec_never_made")
