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
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from ppec.core.errors import PpecError
from ppec.operator.store.transient import DEFAULT_CONNECT_TIMEOUT, StoreUnavailable, with_backoff

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

    def __init__(self, location: str, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        self.location = location
        self.connect_timeout = connect_timeout
        path = Path(location)
        path.parent.mkdir(parents=True, exist_ok=True)
        # SQLite's own busy wait is the back-off here (it retries a locked database for
        # up to busy_timeout). Not bound to the opening thread: `ppec serve` lends one
        # connection to one request thread at a time (service/http/reader.py).
        self._db = sqlite3.connect(path, isolation_level=None, timeout=connect_timeout,
                                   check_same_thread=False)
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute(f"PRAGMA busy_timeout={int(connect_timeout * 1000)}")
        if self._db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            with self._locked("switch the store to WAL"):
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
        with self._locked("write"):
            self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextmanager
    def _locked(self, doing: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        except sqlite3.OperationalError as e:
            if "locked" not in str(e):
                raise
            raise StoreUnavailable(
                f"the store {self.location} stayed locked by another writer: could not "
                f"{doing} after waiting {time.monotonic() - t0:.1f} s ([store] "
                f"connect_timeout = {self.connect_timeout:g} s)") from None

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

    def __init__(self, location: str, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        try:
            import psycopg
        except ImportError:
            raise PpecError("PostgreSQL store needs psycopg: pip install 'psycopg[binary]'",
                            code="NO_DRIVER") from None
        self.location = location
        self.connect_timeout = connect_timeout
        self._lost = psycopg.OperationalError
        self._in_tx = False
        # A full server, one starting up or restarting: wait our turn (transient.py).
        self._pg = with_backoff(
            lambda remaining: psycopg.connect(location, autocommit=True,
                                              connect_timeout=max(1, int(min(remaining, 10)))),
            timeout=connect_timeout, what=_redact(location))
        self.IntegrityError = (psycopg.IntegrityError,)
        self.execute("CREATE TABLE IF NOT EXISTS ppec_schema (version INTEGER NOT NULL)")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        try:
            return self._pg.execute(sql.replace("?", "%s"), tuple(params))
        except self._lost as e:
            raise self._gone(e, _ROLLED_BACK if self._in_tx else "") from None

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            with self._pg.cursor() as cur:
                cur.executemany(sql.replace("?", "%s"), [tuple(r) for r in rows])
        except self._lost as e:
            raise self._gone(e, _ROLLED_BACK if self._in_tx else "") from None

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        committing = False
        self._in_tx = True
        try:
            with self._pg.transaction():
                self.execute("SELECT pg_advisory_xact_lock(?)", (_ADVISORY_KEY,))
                yield self
                committing = True
        except self._lost as e:
            # Lost before COMMIT was sent, the server rolled the transaction back; lost
            # during it, only the server knows (the reply is what went missing).
            raise self._gone(e, "while committing: the change may or may not have been "
                                "made, look before retrying" if committing else
                             _ROLLED_BACK) from None
        finally:
            self._in_tx = False

    def _gone(self, error: Exception, outcome: str) -> StoreUnavailable:
        detail = " ".join(str(error).split())
        return StoreUnavailable(f"lost the connection to the store at {_redact(self.location)}"
                                f"{' ' + outcome if outcome else ''} ({detail})")

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


_ROLLED_BACK = "before the change was committed: nothing was changed"


def _redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def connect(location: str, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Connection:
    kind = PostgresConnection if is_postgres(location) else Connection
    return kind(location, connect_timeout)
