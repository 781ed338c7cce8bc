"""The host's ledger: what this agent built and what each VM owns (SQLite on the host).

A VM row moves ``creating`` -> ``present`` -> ``deleting`` -> gone. The row is written
before the first side effect of each step, so after a crash the agent knows what to undo
or finish (see ``AgentService.recover``).
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ppec.errors import AlreadyExists

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vms (
    name        TEXT PRIMARY KEY,
    uuid        TEXT NOT NULL UNIQUE,
    state       TEXT NOT NULL CHECK (state IN ('creating', 'present', 'deleting')),
    vcpus       INTEGER NOT NULL,
    memory_mib  INTEGER NOT NULL,
    disk_path   TEXT NOT NULL UNIQUE,
    disk_bytes  INTEGER NOT NULL,
    image       TEXT NOT NULL DEFAULT '',
    power       TEXT NOT NULL DEFAULT 'running',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
"""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class VmRecord:
    name: str
    uuid: str
    state: str
    vcpus: int
    memory_mib: int
    disk_path: str
    disk_bytes: int
    image: str
    power: str
    created_at: str


class Ledger:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise RuntimeError(f"ledger {path} has schema {row[0]}, newer than this agent")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def begin_create(self, rec: VmRecord) -> None:
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO vms (name, uuid, state, vcpus, memory_mib, disk_path,"
                    " disk_bytes, image, power, created_at, updated_at)"
                    " VALUES (?, ?, 'creating', ?, ?, ?, ?, ?, ?, ?, ?)",
                    (rec.name, rec.uuid, rec.vcpus, rec.memory_mib, rec.disk_path,
                     rec.disk_bytes, rec.image, rec.power, rec.created_at, now()))
        except sqlite3.IntegrityError as e:
            raise AlreadyExists(f"the ledger already holds a VM named {rec.name} or its disk "
                                f"{rec.disk_path} ({e})") from None

    def set_state(self, name: str, state: str) -> None:
        with self._lock:
            self._db.execute("UPDATE vms SET state=?, updated_at=? WHERE name=?",
                             (state, now(), name))

    def set_power(self, name: str, power: str) -> None:
        with self._lock:
            self._db.execute("UPDATE vms SET power=?, updated_at=? WHERE name=?",
                             (power, now(), name))

    def remove(self, name: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM vms WHERE name=?", (name,))

    def get(self, name: str) -> VmRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT name, uuid, state, vcpus, memory_mib, disk_path, disk_bytes, image,"
                " power, created_at FROM vms WHERE name=?", (name,)).fetchone()
        return VmRecord(*row) if row else None

    def all(self) -> list[VmRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, uuid, state, vcpus, memory_mib, disk_path, disk_bytes, image,"
                " power, created_at FROM vms ORDER BY name").fetchall()
        return [VmRecord(*r) for r in rows]
