"""The operator store (SQLite): schema, constraints, concurrent reservations."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ppec.errors import AlreadyExists, BadInput, NotFound
from ppec.store import MIGRATIONS, Host, Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "ppec.db")
    s.add_host(Host(name="h1", address="local"))
    return s


def test_schema_is_versioned_and_reopening_keeps_data(tmp_path: Path, store: Store) -> None:
    assert store.schema_version == len(MIGRATIONS)
    store.close()
    again = Store(tmp_path / "ppec.db")
    assert [h.name for h in again.hosts()] == ["h1"]


def test_newer_schema_is_refused(tmp_path: Path, store: Store) -> None:
    store.close()
    with sqlite3.connect(tmp_path / "ppec.db") as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(BadInput, match="newer than this ppec"):
        Store(tmp_path / "ppec.db")


def test_host_round_trip_and_errors(store: Store) -> None:
    h = Host(name="h2", address="10.0.0.2", port=2222, tags=("ssd", "gpu"), cost=1.5)
    store.add_host(h)
    assert store.host("h2") == h
    with pytest.raises(AlreadyExists):
        store.add_host(h)
    with pytest.raises(NotFound, match="unknown host 'nope'"):
        store.host("nope")
    assert store.set_drained("h2", True).drained is True


def test_vm_name_is_unique_by_constraint(tmp_path: Path, store: Store) -> None:
    store.reserve_vm("a", "h1", 1, 64, 1 << 20, "")
    with pytest.raises(AlreadyExists, match="a VM named a already exists on host h1"):
        store.reserve_vm("a", "h1", 1, 64, 1 << 20, "")
    with sqlite3.connect(tmp_path / "ppec.db") as db, pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO vms (name, host, state, vcpus, memory_mib, disk_bytes, "
                   "created_at, updated_at) VALUES ('a', 'h1', 'x', 1, 1, 1, 'n', 'n')")


def test_vm_must_be_on_a_known_host(store: Store) -> None:
    with pytest.raises(NotFound, match="unknown host 'ghost'"):
        store.reserve_vm("a", "ghost", 1, 64, 1 << 20, "")


def test_concurrent_reservations_from_processes_never_share_a_name(tmp_path: Path,
                                                                   store: Store) -> None:
    """Ten processes race to reserve the same five names: each name is won exactly once."""
    code = ("import sys; from ppec.store import Store; from ppec.errors import AlreadyExists\n"
            "s = Store(sys.argv[1]); won = []\n"
            "for n in ['n0','n1','n2','n3','n4']:\n"
            "    try: s.reserve_vm(n, 'h1', 1, 64, 1, ''); won.append(n)\n"
            "    except AlreadyExists: pass\n"
            "print(' '.join(won))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "ppec.db")],
                              stdout=subprocess.PIPE, text=True) for _ in range(10)]
    won = [n for p in procs for n in p.communicate(timeout=120)[0].split()]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(won) == ["n0", "n1", "n2", "n3", "n4"]
    assert [v.name for v in store.vms()] == ["n0", "n1", "n2", "n3", "n4"]


def test_remove_host_refused_while_vms_exist(store: Store) -> None:
    store.reserve_vm("a", "h1", 1, 64, 1, "")
    with pytest.raises(BadInput, match="still has 1 VM"):
        store.remove_host("h1")
    store.forget_vm("a")
    store.remove_host("h1")
    assert store.hosts() == []
