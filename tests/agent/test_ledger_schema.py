"""The ledger's script 9 rebuilds the vms table (new states: migrating, incoming): a
ledger written by the previous schema keeps every row, and a VM's CPUs, memory, disks
and MACs still go with it."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from ppec.agent.ledger import Ledger, LedgerError
from ppec.agent.ledgerschema import MIGRATIONS
from ppec.core import sqlschema


def _old_ledger(path: Path) -> None:
    """A ledger at schema 8 with one dedicated VM holding CPUs, memory, a disk and a MAC."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("BEGIN")
        sqlschema.migrate(sqlschema.Pragma(db), MIGRATIONS[:8], what="old")
        db.execute("INSERT INTO vms (name, uuid, state, vcpus, memory_mib, disk_path, "
                   "disk_bytes, created_at, updated_at, policy, spec) VALUES ('a', 'u1', "
                   "'present', 2, 512, '/d/a.qcow2', 1024, 't', 't', 'dedicated', '{}')")
        db.execute("INSERT INTO vm_cpus (cpu, vm) VALUES (1, 'a'), (2, 'a')")
        db.execute("INSERT INTO vm_memory (vm, cell, mib) VALUES ('a', 0, 512)")
        db.execute("INSERT INTO vm_nics (mac, vm) VALUES ('02:00:00:00:00:01', 'a')")
        db.execute("INSERT INTO disks (vm, target, path, bytes, bus, format, owned, state, "
                   "created_at, updated_at) VALUES ('a', 'vdb', '/d/a-vdb.qcow2', 1, "
                   "'virtio', 'qcow2', 1, 'attached', 't', 't')")
        db.execute("COMMIT")


def _count(path: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_an_old_ledger_keeps_its_rows_and_cascades(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    _old_ledger(path)
    ledger = Ledger(path)
    [rec] = ledger.all()
    assert (rec.name, rec.state, rec.policy, rec.migration) == ("a", "present", "dedicated", "")
    [alloc] = ledger.allocations()
    assert alloc.cpus == {1, 2} and alloc.memory == ((0, 512),)
    assert [d.target for d in ledger.disks("a")] == ["vdb"]
    ledger.set_move("a", "migrating", {"peer": "h2"})
    assert ledger.get("a").move == {"peer": "h2"}  # type: ignore[union-attr]
    ledger.remove("a")   # foreign keys are on again: the VM's rows go with it
    for table in ("vm_cpus", "vm_memory", "vm_nics", "disks"):
        assert _count(path, table) == 0, table
    ledger.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_a_state_outside_the_machine_is_refused(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    with contextlib.closing(sqlite3.connect(tmp_path / "ledger.db")) as db, \
            pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO vms (name, uuid, state, vcpus, memory_mib, disk_path, "
                   "disk_bytes, created_at, updated_at) VALUES ('b', 'u', 'moving', 1, 1, "
                   "'/d/b', 1, 't', 't')")
    ledger.close()


def test_a_ledger_whose_rows_point_nowhere_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    _old_ledger(path)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("INSERT INTO vm_cpus (cpu, vm) VALUES (9, 'ghost')")   # FKs off here
    with pytest.raises(LedgerError) as e:
        Ledger(path)
    assert "missing VMs" in e.value.message
    with contextlib.closing(sqlite3.connect(path)) as db:   # nothing was changed
        assert db.execute("PRAGMA user_version").fetchone()[0] == 8
