"""Leader lock: of all services on one store, only the holder runs the periodic jobs.

PostgreSQL: a session-level advisory lock on a connection of its own (not the store's),
so it lives exactly as long as this process's session: kill -9 ends the session and the
server releases it. SQLite: an flock on a file beside the store, released by the kernel
when the process dies.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Protocol

from ppec.core.errors import PpecError
from ppec.operator.store.backends import is_postgres

# Distinct from the store's transaction lock key (0x70706563): a session lock on that
# key would block every writer.
LEADER_KEY = 0x7070656353525645   # "ppecSRVE"


class Leader(Protocol):
    where: str

    def try_acquire(self) -> bool: ...
    def still_held(self) -> bool: ...
    def release(self) -> None: ...


class FileLeader:
    def __init__(self, store_path: str) -> None:
        from filelock import FileLock  # only SQLite stores need it
        self.path = Path(store_path).with_name(Path(store_path).name + ".leader")
        self.where = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.path), timeout=0, thread_local=False)

    def try_acquire(self) -> bool:
        from filelock import Timeout
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        return True

    def still_held(self) -> bool:
        return bool(self._lock.is_locked)

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release(force=True)


class PgLeader:
    def __init__(self, url: str) -> None:
        self.url = url
        self.where = f"pg_advisory_lock({LEADER_KEY})"
        self._conn: Any = None
        self._held = False

    def _connect(self) -> Any:
        import psycopg
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
            except psycopg.OperationalError as e:
                raise PpecError(f"leader lock: cannot connect to the store: "
                                f"{str(e).strip()}", code="STORE_UNAVAILABLE") from None
        return self._conn

    def try_acquire(self) -> bool:
        row = self._connect().execute("SELECT pg_try_advisory_lock(%s)",
                                      (LEADER_KEY,)).fetchone()
        self._held = bool(row and row[0])
        return self._held

    def still_held(self) -> bool:
        """The lock lives with the session: a dropped connection means it is gone."""
        if not self._held or self._conn is None:
            return False
        try:
            self._conn.execute("SELECT 1").fetchone()
        except Exception:   # any failure on this connection: the session is gone
            self._held = False
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        return self._held

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                if self._held:
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (LEADER_KEY,))
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
        self._held = False


def for_store(location: str) -> Leader:
    return PgLeader(location) if is_postgres(location) else FileLeader(location)
