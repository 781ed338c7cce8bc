"""The host's ledger: what this agent built and what each VM owns (SQLite on the host).

A VM row moves ``creating`` -> ``present`` -> ``deleting`` -> gone. The row is written
before the first side effect of each step, so after a crash the agent knows what to undo
or finish (see ``ppec.agent.recovery``). The host CPUs a dedicated VM holds are rows of
``vm_cpus`` whose primary key is the CPU: two VMs holding one CPU is a constraint
violation, not only a bug the fit must avoid.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppec.agent.ledgerschema import MIGRATIONS
from ppec.core import sqlschema
from ppec.core.clock import utc_now
from ppec.core.errors import AlreadyExists, PpecError
from ppec.numa import Allocation
from ppec.wire.vmspec import VmSpec

_COLS = ("name, uuid, state, vcpus, memory_mib, disk_path, disk_bytes, image, power,"
         " created_at, policy, threads, emulator, numa_nodes, spec, migration")


class LedgerError(PpecError):
    """The ledger file cannot be opened as this agent's ledger (the daemon exits 1)."""

    code = "LEDGER"


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
    policy: str = "shared"
    threads: str = "prefer"
    emulator: str = "share"
    numa_nodes: int = 0          # 0: auto
    spec: str = ""               # VmSpec.document() as JSON; "" for VMs built before it
    migration: str = ""          # a move under way (state migrating|incoming), as JSON

    @property
    def hugepages(self) -> int:
        """The page size (KiB) backing its memory, from its document; 0: ordinary."""
        if not self.spec:
            return 0
        return int(json.loads(self.spec).get("hugepages") or 0)

    @property
    def move(self) -> dict[str, Any]:
        """The move under way: {peer, uri} (agent/outgoing.py) or {peer, deadline}
        (agent/incoming.py)."""
        return dict(json.loads(self.migration)) if self.migration else {}

    @property
    def document(self) -> dict[str, Any]:
        return dict(json.loads(self.spec)) if self.spec else {}

    @property
    def nics(self) -> list[dict[str, Any]]:
        """The NICs ppec gave the VM ({vrf, mac, address, gateway, dns} each)."""
        return list(self.document.get("nics", []))

    @classmethod
    def creating(cls, spec: VmSpec, *, uuid: str, disk_path: str, created_at: str
                 ) -> VmRecord:
        """The row a create writes first: the VM's shape from its spec."""
        shape, pin = spec.shape, spec.shape.pinning
        return cls(name=spec.name, uuid=uuid, state="creating", vcpus=shape.vcpus,
                   memory_mib=shape.memory_mib, disk_path=disk_path,
                   disk_bytes=shape.disk_bytes, image=spec.image, power="running",
                   created_at=created_at, policy=pin.policy, threads=pin.threads,
                   emulator=pin.emulator, numa_nodes=pin.nodes,
                   spec=json.dumps(spec.document(), sort_keys=True))


@dataclass(frozen=True)
class DiskRecord:
    vm: str
    target: str
    path: str
    bytes: int
    bus: str
    format: str
    owned: bool        # ppec made the volume (attach --size); else attached with --path
    keep: bool         # the detach in progress keeps the volume
    state: str
    created_at: str


_DISK_COLS = "vm, target, path, bytes, bus, format, owned, keep, state, created_at"


class Ledger:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._lock = threading.Lock()
        try:
            with self._lock:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
            # Foreign keys off while the scripts run: a script that rebuilds a table (to
            # change a CHECK) drops the old one, which would cascade to its children. They
            # are checked before the commit, then enforced for good.
            with self._tx() as db:
                sqlschema.migrate(sqlschema.Pragma(db), MIGRATIONS, what=f"ledger {path}",
                                  program="ppec-agent")
                broken = db.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise LedgerError(f"ledger {path}: rows refer to missing VMs: {broken}")
            with self._lock:
                self._db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as e:   # not a database, or a damaged one
            self._db.close()
            raise LedgerError(f"ledger {path} cannot be read: {e}") from None
        except PpecError:
            self._db.close()
            raise

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def begin_create(self, rec: VmRecord, cpus: Iterable[int] = (),
                     memory: Iterable[tuple[int, int]] = (),
                     disks: Iterable[DiskRecord] = ()) -> None:
        """The VM's row (as ``rec.state`` says: creating, or incoming for a migration's
        claim) and everything it will hold, data disks included, in one transaction."""
        try:
            with self._tx() as db:
                db.execute(
                    f"INSERT INTO vms ({_COLS}, updated_at) VALUES ({','.join('?' * 17)})",
                    (rec.name, rec.uuid, rec.state, rec.vcpus, rec.memory_mib, rec.disk_path,
                     rec.disk_bytes, rec.image, rec.power, rec.created_at, rec.policy,
                     rec.threads, rec.emulator, rec.numa_nodes, rec.spec, rec.migration,
                     utc_now()))
                self._hold(db, rec.name, cpus, memory)
                db.executemany("INSERT INTO vm_nics (mac, vm) VALUES (?, ?)",
                               [(n["mac"], rec.name) for n in rec.nics])
                for disk in disks:
                    self._insert_disk(db, disk)
        except sqlite3.IntegrityError as e:
            raise AlreadyExists(f"the ledger already holds a VM named {rec.name}, its disk "
                                f"{rec.disk_path}, one of its CPUs or MACs ({e})") from None

    @staticmethod
    def _hold(db: sqlite3.Connection, name: str, cpus: Iterable[int],
              memory: Iterable[tuple[int, int]]) -> None:
        db.executemany("INSERT INTO vm_cpus (cpu, vm) VALUES (?, ?)",
                       [(c, name) for c in sorted(cpus)])
        db.executemany("INSERT INTO vm_memory (vm, cell, mib) VALUES (?, ?, ?)",
                       [(name, cell, mib) for cell, mib in memory])

    def replace_holdings(self, name: str, cpus: Iterable[int],
                         memory: Iterable[tuple[int, int]]) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM vm_cpus WHERE vm=?", (name,))
            db.execute("DELETE FROM vm_memory WHERE vm=?", (name,))
            self._hold(db, name, cpus, memory)

    def record_alerts(self, alerts: Iterable[tuple[str, str, str]]) -> list[dict[str, str]]:
        """Open alerts become exactly ``alerts``: new ones dated now, ongoing ones keep
        their first sighting, the rest are resolved (removed)."""
        stamp = utc_now()
        current = list(alerts)
        with self._tx() as db:
            keep = {(c, o) for c, o, _ in current}
            for code, obj in db.execute("SELECT code, object FROM alerts").fetchall():
                if (code, obj) not in keep:
                    db.execute("DELETE FROM alerts WHERE code=? AND object=?", (code, obj))
            for code, obj, detail in current:
                db.execute("INSERT INTO alerts (code, object, detail, first_seen, last_seen) "
                           "VALUES (?, ?, ?, ?, ?) ON CONFLICT(code, object) DO UPDATE SET "
                           "detail=excluded.detail, last_seen=excluded.last_seen",
                           (code, obj, detail, stamp, stamp))
            rows = db.execute("SELECT code, object, detail, first_seen, last_seen FROM alerts "
                              "ORDER BY object, code").fetchall()
        return [dict(zip(("code", "object", "detail", "first_seen", "last_seen"), r,
                         strict=True)) for r in rows]

    def use_nonce(self, nonce: str, digest: str, anchor: tuple[int, str] | None = None
                  ) -> bool:
        """Record an approval's nonce, and the audit chain head (seq, hash) it came with
        in the same transaction; False when it was used before (a replay)."""
        stamp = utc_now()
        try:
            with self._tx() as db:
                db.execute("INSERT INTO used_nonces (nonce, digest, used_at) VALUES (?, ?, ?)",
                           (nonce, digest, stamp))
                if anchor is not None:
                    db.execute("INSERT INTO audit_anchors (nonce, seq, hash, digest, at) "
                               "VALUES (?, ?, ?, ?, ?)", (nonce, *anchor, digest, stamp))
        except sqlite3.IntegrityError:
            return False
        return True

    def anchors(self) -> list[dict[str, object]]:
        """Every audit chain head recorded, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT seq, hash, digest, at FROM audit_anchors "
                                    "ORDER BY seq, at").fetchall()
        return [dict(zip(("seq", "hash", "digest", "at"), r, strict=True)) for r in rows]

    def set_state(self, name: str, state: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE vms SET state=?, updated_at=? WHERE name=?",
                       (state, utc_now(), name))

    def set_power(self, name: str, power: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE vms SET power=?, updated_at=? WHERE name=?",
                       (power, utc_now(), name))

    def remove(self, name: str) -> None:
        """The row and, by cascade, every CPU and MiB it held."""
        with self._tx() as db:
            db.execute("DELETE FROM vms WHERE name=?", (name,))

    def begin_attach(self, disk: DiskRecord) -> None:
        try:
            with self._tx() as db:
                self._insert_disk(db, disk)
        except sqlite3.IntegrityError as e:
            raise AlreadyExists(f"the ledger already has disk {disk.target} of {disk.vm} or "
                                f"volume {disk.path} ({e})") from None

    @staticmethod
    def _insert_disk(db: sqlite3.Connection, disk: DiskRecord) -> None:
        db.execute(f"INSERT INTO disks ({_DISK_COLS}, updated_at) "
                   f"VALUES ({','.join('?' * 11)})",
                   (disk.vm, disk.target, disk.path, disk.bytes, disk.bus, disk.format,
                    int(disk.owned), int(disk.keep), disk.state, disk.created_at,
                    utc_now()))

    def set_move(self, name: str, state: str, move: dict[str, Any] | None) -> None:
        """The VM's state and the move under way (None: no move)."""
        with self._tx() as db:
            db.execute("UPDATE vms SET state=?, migration=?, updated_at=? WHERE name=?",
                       (state, json.dumps(move, sort_keys=True) if move else "", utc_now(),
                        name))

    def set_disk(self, vm: str, target: str, state: str, keep: bool | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE disks SET state=?, keep=COALESCE(?, keep), updated_at=? "
                       "WHERE vm=? AND target=?",
                       (state, None if keep is None else int(keep), utc_now(), vm, target))

    def remove_disk(self, vm: str, target: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM disks WHERE vm=? AND target=?", (vm, target))

    def disks(self, vm: str | None = None) -> list[DiskRecord]:
        where, args = ("WHERE vm=?", (vm,)) if vm is not None else ("", ())
        with self._lock:
            rows = self._db.execute(f"SELECT {_DISK_COLS} FROM disks {where} "
                                    f"ORDER BY vm, length(target), target", args).fetchall()
        return [DiskRecord(vm=r[0], target=r[1], path=r[2], bytes=r[3], bus=r[4], format=r[5],
                           owned=bool(r[6]), keep=bool(r[7]), state=r[8], created_at=r[9])
                for r in rows]

    def get(self, name: str) -> VmRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLS} FROM vms WHERE name=?",
                                   (name,)).fetchone()
        return VmRecord(*row) if row else None

    def all(self) -> list[VmRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLS} FROM vms ORDER BY name").fetchall()
        return [VmRecord(*r) for r in rows]

    def allocations(self) -> list[Allocation]:
        """What every VM in the ledger holds, as the NUMA fit takes it."""
        with self._lock:
            vms = self._db.execute("SELECT name, policy, vcpus, memory_mib FROM vms").fetchall()
            cpus = self._db.execute("SELECT vm, cpu FROM vm_cpus").fetchall()
            mem = self._db.execute("SELECT vm, cell, mib FROM vm_memory").fetchall()
        held: dict[str, set[int]] = {}
        for vm, cpu in cpus:
            held.setdefault(vm, set()).add(cpu)
        bound: dict[str, list[tuple[int, int]]] = {}
        for vm, cell, mib in mem:
            bound.setdefault(vm, []).append((cell, mib))
        return [Allocation(name, policy, vcpus, frozenset(held.get(name, ())),
                           tuple(sorted(bound.get(name, [(-1, memory)]))))
                for name, policy, vcpus, memory in vms]
