"""The one migration runner, on real SQLite: versions, refusals, atomic scripts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ppec.core import sqlschema
from ppec.core.errors import BadInput

SCHEMA = ["CREATE TABLE a (x INTEGER)", "ALTER TABLE a ADD COLUMN y TEXT; CREATE TABLE b (z)"]


def _db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_applies_missing_scripts_in_order_and_sets_the_version(tmp_path: Path) -> None:
    db = _db(tmp_path / "x.db")
    assert sqlschema.migrate(sqlschema.Pragma(db), SCHEMA[:1], what="x") == 0
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    # Later: only the new script runs (the first would fail: table a exists).
    assert sqlschema.migrate(sqlschema.Pragma(db), SCHEMA, what="x") == 1
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.execute("INSERT INTO a (x, y) VALUES (1, 'one')")
    db.execute("INSERT INTO b (z) VALUES (2)")
    assert sqlschema.migrate(sqlschema.Pragma(db), SCHEMA, what="x") == 2


def test_a_newer_database_is_refused_untouched(tmp_path: Path) -> None:
    db = _db(tmp_path / "x.db")
    db.execute("PRAGMA user_version=7")
    with pytest.raises(sqlschema.SchemaTooNew) as e:
        sqlschema.migrate(sqlschema.Pragma(db), SCHEMA, what="ledger /x", program="ppec-agent")
    assert str(e.value.message) == ("ledger /x has schema 7, newer than this ppec-agent "
                                    "(knows 2); upgrade ppec-agent")
    assert e.value.code == "SCHEMA_TOO_NEW" and isinstance(e.value, BadInput)
    assert db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


def test_callbacks_and_a_dialect_rewrite(tmp_path: Path) -> None:
    """The operator store's shape: the version in a table, DDL rewritten per dialect."""
    db = _db(tmp_path / "x.db")
    db.execute("CREATE TABLE schema (version INTEGER)")
    seen: list[str] = []

    def ddl(statement: str) -> str:
        seen.append(statement.strip())
        return statement.replace("TEXT", "VARCHAR")

    def put(n: int) -> None:
        db.execute("DELETE FROM schema")
        db.execute("INSERT INTO schema VALUES (?)", (n,))

    def get() -> int:
        row = db.execute("SELECT max(version) FROM schema").fetchone()
        return int(row[0] or 0)

    assert sqlschema.migrate(db, SCHEMA, what="store", ddl=ddl, get_version=get,
                             set_version=put) == 0
    assert get() == 2
    assert seen == ["CREATE TABLE a (x INTEGER)", "ALTER TABLE a ADD COLUMN y TEXT",
                    "CREATE TABLE b (z)"]
    assert "VARCHAR" in db.execute("SELECT sql FROM sqlite_master WHERE name='a'").fetchone()[0]


def test_a_connection_without_versions_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="schema_version"):
        sqlschema.migrate(_db(tmp_path / "x.db"), SCHEMA, what="x")


def test_a_failing_script_inside_a_transaction_leaves_the_old_version(tmp_path: Path) -> None:
    db = _db(tmp_path / "x.db")
    sqlschema.migrate(sqlschema.Pragma(db), SCHEMA[:1], what="x")
    db.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError):
        sqlschema.migrate(sqlschema.Pragma(db),
                          [SCHEMA[0], "CREATE TABLE c (q); CREATE TABLE a (dup)"], what="x")
    db.execute("ROLLBACK")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM sqlite_master WHERE name='c'").fetchone()[0] == 0


def test_the_operator_stores_migrations_run_through_it(store_url: str) -> None:
    """The call the operator store will make (its connection has schema_version() and
    set_schema_version(), and ddl() for PostgreSQL), on both real backends: the same
    tables and version as the store's own migration, and a newer store is refused with the
    store's message."""
    from ppec.operator.store.backends import connect
    from ppec.operator.store.tables import MIGRATIONS, Store

    conn = connect(store_url)
    try:
        with conn.transaction() as db:
            assert sqlschema.migrate(db, MIGRATIONS, what=f"store {store_url}",
                                     ddl=db.ddl) == 0
        assert conn.schema_version() == len(MIGRATIONS)
        with conn.transaction() as db:
            db.set_schema_version(len(MIGRATIONS) + 1)
        with pytest.raises(BadInput, match="newer than this ppec"), conn.transaction() as db:
            sqlschema.migrate(db, MIGRATIONS, what=f"store {store_url}", ddl=db.ddl)
        with conn.transaction() as db:
            db.set_schema_version(len(MIGRATIONS))
    finally:
        conn.close()
    store = Store(store_url)   # the store's own runner finds nothing left to do
    assert store.schema_version == len(MIGRATIONS)
    store.close()
