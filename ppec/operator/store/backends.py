"""One small connection type over SQLite and PostgreSQL, for the operator store.

SQL is written once, with ``?`` placeholders and portable DDL; this layer adapts it.
Writes run in ``transaction()``, which serializes writers on both backends (SQLite's
``BEGIN IMMEDIATE``; a transaction-scoped advisory lock on PostgreSQL), so read-then-write
steps such as "next free address" cannot interleave between ppec processes, and the
database constraints back that up.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from ppec.core.errors import PpecError

_ADVISORY_KEY = 0x70706563   # "ppec"


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


class Connection:
    dialect = "sqlite"

    def __init__(self, location: str) -> None:
        self.location = location
        path = Path(location)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=30000")
        if self._db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self._db.execute("PRAGMA journal_mode=WAL")
        self.IntegrityError: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self._db.execute(sql, tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        # IMMEDIATE takes the write lock up front, so concurrent ppec processes queue
        # instead of failing on a lock upgrade.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def set_schema_version(self, version: int) -> None:
        self._db.execute(f"PRAGMA user_version={int(version)}")

    def ddl(self, statement: str) -> str:
        # SQLite's INTEGER is already 8 bytes: a migration widening a column to BIGINT
        # for PostgreSQL (which SQLite's ALTER TABLE cannot say) has nothing to do here.
        if re.match(r"\s*ALTER TABLE \w+ ALTER COLUMN \w+ TYPE BIGINT\s*$", statement):
            return "SELECT 1"
        return statement

    def close(self) -> None:
        self._db.close()


class PostgresConnection(Connection):
    dialect = "postgresql"

    def __init__(self, location: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise PpecError("PostgreSQL store needs psycopg: pip install 'psycopg[binary]'",
                            code="NO_DRIVER") from None
        self.location = location
        try:
            self._pg = psycopg.connect(location, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as e:
            raise PpecError(f"cannot connect to the store at {_redact(location)}: "
                            f"{str(e).strip()}", code="STORE_UNAVAILABLE") from None
        self.IntegrityError = (psycopg.IntegrityError,)
        self._pg.execute("CREATE TABLE IF NOT EXISTS ppec_schema (version INTEGER NOT NULL)")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self._pg.execute(sql.replace("?", "%s"), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._pg.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), [tuple(r) for r in rows])

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self._pg.transaction():
            self._pg.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_KEY,))
            yield self

    def schema_version(self) -> int:
        row = self._pg.execute("SELECT max(version) FROM ppec_schema").fetchone()
        return int(row[0] or 0) if row else 0

    def set_schema_version(self, version: int) -> None:
        self._pg.execute("DELETE FROM ppec_schema")
        self._pg.execute("INSERT INTO ppec_schema (version) VALUES (%s)", (int(version),))

    def ddl(self, statement: str) -> str:
        # SQLite's REAL is a double; PostgreSQL's is a 4-byte float (too coarse for times).
        # Likewise its INTEGER is 4 bytes: a byte count (a 2 GiB disk) needs BIGINT.
        statement = re.sub(r"\b(\w*_bytes)(\s+)INTEGER\b", r"\1\2BIGINT", statement)
        return re.sub(r"\bREAL\b", "DOUBLE PRECISION", statement)

    def close(self) -> None:
        self._pg.close()


def _redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def connect(location: str) -> Connection:
    return PostgresConnection(location) if is_postgres(location) else Connection(location)
