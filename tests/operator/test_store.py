"""The operator store (SQLite): schema, constraints, concurrent reservations."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ppec.core.errors import AlreadyExists, BadInput, NotFound
from ppec.operator.store import HaConflict, Host, Store, pages
from ppec.operator.store.tables import MIGRATIONS
from ppec.wire.vmspec import Shape
from tests.conftest import direct


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    s.add_host(Host(name="h1", address="local"))
    yield s
    s.close()


def test_schema_is_versioned_and_reopening_keeps_data(store_url: str, store: Store) -> None:
    assert store.schema_version == len(MIGRATIONS)
    store.close()
    again = Store(store_url)
    assert [h.name for h in again.hosts()] == ["h1"]
    again.close()


def test_newer_schema_is_refused(store_url: str, store: Store) -> None:
    store.close()
    with contextlib.closing(direct(store_url)) as db:
        db.execute("PRAGMA user_version=99" if store.db.dialect == "sqlite"
                   else "UPDATE ppec_schema SET version=99")
    with pytest.raises(BadInput, match="newer than this ppec"):
        Store(store_url)


def test_host_round_trip_and_errors(store: Store) -> None:
    h = Host(name="h2", address="10.0.0.2", port=2222, tags=("ssd", "gpu"), cost=1.5)
    store.add_host(h)
    assert store.host("h2") == h
    with pytest.raises(AlreadyExists):
        store.add_host(h)
    with pytest.raises(NotFound, match="unknown host 'nope'"):
        store.host("nope")
    assert store.set_drained("h2", True).drained is True


def test_vm_name_is_unique_by_constraint(store_url: str, store: Store) -> None:
    store.reserve_vm("a", "h1", Shape(1, 64, 1 << 20), "")
    with pytest.raises(AlreadyExists, match="a VM named a already exists on host h1"):
        store.reserve_vm("a", "h1", Shape(1, 64, 1 << 20), "")
    with contextlib.closing(direct(store_url)) as db, pytest.raises(Exception) as e:
        db.execute("INSERT INTO vms (name, host, state, vcpus, memory_mib, disk_bytes, "
                   "created_at, updated_at) VALUES ('a', 'h1', 'x', 1, 1, 1, 'n', 'n')")
    assert "unique" in str(e.value).lower() or "duplicate" in str(e.value).lower()


def test_ha_spread_key_is_unique_by_constraint(store: Store) -> None:
    store.add_host(Host(name="h2", address="local"))
    store.ha_group("g", "host")
    store.reserve_vm("a", "h1", Shape(1, 64, 1), "", "g", "h1")
    with pytest.raises(HaConflict):
        store.reserve_vm("b", "h1", Shape(1, 64, 1), "", "g", "h1")
    store.reserve_vm("b", "h2", Shape(1, 64, 1), "", "g", "h2")
    with pytest.raises(HaConflict):
        store.move_vm("b", "h1", "h1")
    with pytest.raises(BadInput, match="spreads by host"):
        store.ha_group("g", "rack")
    assert [m[0] for m in store.ha_members("g")] == ["a", "b"]


def test_vm_must_be_on_a_known_host(store: Store) -> None:
    with pytest.raises(NotFound, match="unknown host 'ghost'"):
        store.reserve_vm("a", "ghost", Shape(1, 64, 1 << 20), "")


def test_concurrent_reservations_from_processes_never_share_a_name(store_url: str,
                                                                   store: Store) -> None:
    """Ten processes race to reserve the same five names: each name is won exactly once."""
    code = ("import sys; from ppec.operator.store import Store\n"
            "from ppec.core.errors import AlreadyExists\n"
            "from ppec.wire.vmspec import Shape\n"
            "s = Store(sys.argv[1]); won = []\n"
            "for n in ['n0','n1','n2','n3','n4']:\n"
            "    try: s.reserve_vm(n, 'h1', Shape(1, 64, 1), ''); won.append(n)\n"
            "    except AlreadyExists: pass\n"
            "print(' '.join(won))")
    procs = [subprocess.Popen([sys.executable, "-c", code, store_url],
                              stdout=subprocess.PIPE, text=True) for _ in range(10)]
    won = [n for p in procs for n in p.communicate(timeout=120)[0].split()]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(won) == ["n0", "n1", "n2", "n3", "n4"]
    assert [v.name for v in store.vms()] == ["n0", "n1", "n2", "n3", "n4"]


def test_remove_host_refused_while_vms_exist(store: Store) -> None:
    store.reserve_vm("a", "h1", Shape(1, 64, 1), "")
    with pytest.raises(BadInput, match="still has 1 VM"):
        store.remove_host("h1")
    store.forget_vm("a")
    store.remove_host("h1")
    assert store.hosts() == []


def test_a_vm_leaving_its_host_counts_as_a_change_there(store: Store) -> None:
    """Placement re-asks a host whose snapshot predates its last VM change; a deleted VM
    is such a change though no row is left to show it (else the snapshot still counts
    the VM's CPUs and memory, and a create there is refused for a few seconds)."""
    store.add_host(Host("h2", "local"))
    t0 = time.time()
    store.reserve_vm("a", "h1", Shape(1, 64, 1), "")
    store.reserve_vm("b", "h2", Shape(1, 64, 1), "")
    made = pages.vm_changes(store)
    assert set(made) == {"h1", "h2"} and t0 <= made["h1"] <= made["h2"] <= time.time()
    store.forget_vm("a")
    gone = pages.vm_changes(store)
    assert gone["h1"] > made["h1"] and gone["h2"] == made["h2"]
    store.forget_vm("never-was")      # nothing to forget: no change recorded anywhere
    assert pages.vm_changes(store) == gone
    store.set_vm("b", state="running")           # a start or stop is a change too
    started = pages.vm_changes(store)
    assert started["h2"] > gone["h2"] and started["h1"] == gone["h1"]
    store.set_vm("b", host="h1")                 # a move changes both hosts
    moved = pages.vm_changes(store)
    assert moved["h1"] > started["h1"] and moved["h2"] > started["h2"]
    assert pages.vm_changes(store, ["h2"]) == {"h2": moved["h2"]}
    store.forget_vm("b")
    store.remove_host("h1")           # the change time goes with the host
    assert set(pages.vm_changes(store)) == {"h2"}


def test_snapshots_keep_full_precision(store: Store) -> None:
    store.save_snapshot("h1", 1795497582.123456, {"x": 1})
    store.save_snapshot("h1", 1795497583.654321, {"x": 2})
    assert store.snapshots() == {"h1": (1795497583.654321, {"x": 2})}


def test_a_disk_of_terabytes_is_stored_on_both_backends(store_url: str) -> None:
    """Byte counts are 8-byte integers everywhere (PostgreSQL's INTEGER is 4 bytes)."""
    from ppec.wire.vmspec import Shape
    s = Store(store_url)
    s.add_host(Host("h1", "local"))
    s.reserve_vm("big", "h1", Shape(2, 1024, 3 << 40), "")
    assert s.vm("big").disk_bytes == 3 << 40
    s.close()
