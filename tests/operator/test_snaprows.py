"""Stored snapshots keep the part placement reads beside the whole: the same decisions
from a seventh of the bytes, on both backends, and rows from before that column."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ppec.numa.serial import topology_from_dict, topology_from_text, topology_text
from ppec.operator import snapshots
from ppec.operator.store import Host, Store, snaprows
from ppec.operator.store import fleetstate as fs
from tests.conftest import direct
from tests.sim.fleet import SimSettings, host_answers

HOSTS = 12


def answers(i: int) -> dict[str, Any]:
    """A realistic snapshot (the simulated fleet's: mixed NUMA shapes, 15-45 VMs)."""
    snap = dict(host_answers(SimSettings(HOSTS, Path("/nonexistent")), i)["host.snapshot"])
    # What a measuring agent adds (the simulation leaves the totals out).
    snap["vm_use"] = {**snap.get("vm_use", {}), "cpu_used": 0.25 * i, "rss_mib": 900 + i}
    return snap


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    for i in range(HOSTS):
        s.add_host(Host(f"h{i}", "local"))
    yield s
    s.close()


def _save_all(store: Store, now: float) -> dict[str, dict[str, Any]]:
    whole = {f"h{i}": answers(i) for i in range(HOSTS)}
    # Half through the service's round writer, half through the CLI's (sync, refresh).
    fs.record_round(store, [fs.Success(h, now, d) for h, d in list(whole.items())[::2]], [],
                    now)
    for h, d in list(whole.items())[1::2]:
        store.save_snapshot(h, now, d)
    return whole


def test_views_decide_as_the_whole_snapshots_do(store: Store) -> None:
    now = time.time()
    whole = _save_all(store, now)
    views = snaprows.placement_views(store)
    assert set(views) == set(whole)
    for h, data in whole.items():
        inv = store.host(h)
        view = views[h]
        assert view["taken_at"] == now
        assert "vms" not in view and "topology" not in view   # the part, not the whole
        assert len(json.dumps(view)) * 2 < len(json.dumps(data))
        assert snapshots.to_placement(inv, view) == \
            snapshots.to_placement(inv, {**data, "taken_at": now})
    # Some hosts only, in batches (the fresh-snapshot path of vm create).
    some = snaprows.placement_views(store, ["h3", "h7", "ghost"])
    assert some == {"h3": views["h3"], "h7": views["h7"]}
    # The whole snapshots stay as they were, for export and the API.
    assert store.snapshots()["h1"] == (now, whole["h1"])


def test_a_row_from_before_the_column_is_read_whole(store_url: str, store: Store) -> None:
    now = time.time()
    whole = _save_all(store, now)
    fresh = snaprows.placement_views(store, ["h3"])["h3"]
    with direct(store_url) as db:   # as a store of schema 7 left it
        db.execute("UPDATE snapshots SET placement = NULL, allocations = NULL, "
                   "topology = NULL WHERE host = 'h2'")
        # and one of schema 12: the allocations' and topology's text inside the part
        part = json.loads(db.execute("SELECT placement FROM snapshots WHERE host = 'h3'"
                                     ).fetchone()[0])
        part["allocations_text"] = fresh["allocations_text"]
        part["topology_text"] = fresh["topology_text"]
        db.execute("UPDATE snapshots SET placement = ?, allocations = NULL, topology = NULL "
                   "WHERE host = 'h3'"
                   .replace("?", "%s" if store_url.startswith("postgresql") else "?"),
                   (json.dumps(part),))
    views = snaprows.placement_views(store)
    assert views["h3"] == fresh
    assert views["h2"] == {**whole["h2"], "taken_at": now}
    assert snapshots.to_placement(store.host("h2"), views["h2"]) == \
        snapshots.to_placement(store.host("h2"), {**whole["h2"], "taken_at": now})
    store.save_snapshot("h2", now + 1, whole["h2"])   # the next snapshot has the part
    assert "vms" not in snaprows.placement_views(store, ["h2"])["h2"]


def test_place_and_capacity_read_the_views(store: Store, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`ppec place` and `ppec capacity` give the same answers on parts as on wholes."""
    from ppec.operator import capacity_report, choose
    from ppec.operator import config as ppec_config
    from ppec.operator.context import Context
    from ppec.operator.fleet.client import Reach
    now = time.time()
    _save_all(store, now)
    ctx = Context(store=store, config=ppec_config.load(tmp_path / "none.toml"),
                  reach=Reach(known_hosts=tmp_path / "known_hosts"))
    ask = choose.Ask(choose.shape_from(ctx.config, None, 4, "8G", "10G",
                                       _pinning("dedicated")))
    hosts = store.hosts()
    by_view = choose.fleet_from_store(ctx, hosts, "stored")
    by_whole = choose.Fleet([snapshots.to_placement(h, snapshots.stored(ctx).get(h.name))
                             for h in hosts], {}, {})
    assert by_view.hosts == by_whole.hosts
    assert choose.explain(ctx, by_view, ask, now=now) == \
        choose.explain(ctx, by_whole, ask, now=now)
    report = capacity_report.report(ctx, ask=ask, want_max=True)
    assert report["total"]["hosts"] == HOSTS and not report["excluded"]
    monkeypatch.setattr(snapshots, "for_placement", snapshots.stored)   # wholes instead
    assert capacity_report.report(ctx, ask=ask, want_max=True) == report


def _pinning(policy: str) -> Any:
    from ppec.wire.vmspec import Pinning
    return Pinning(policy)


def test_equal_topologies_are_parsed_once_and_shared() -> None:
    a, b = answers(0)["topology"], answers(0)["topology"]
    assert a is not b
    ta, tb = topology_from_dict(a), topology_from_dict(b)
    assert ta is tb and ta is topology_from_text(topology_text(a))
    c = json.loads(json.dumps(a))   # the same model with more memory on its first node
    c["cells"][0]["memory_mib"] += 1024
    tc = topology_from_dict(c)
    assert tc is not ta and tc.cells[0].memory_mib == ta.cells[0].memory_mib + 1024
    # Built in code with sets, not JSON-shaped: parsed, as before.
    odd = {"cells": [{"id": 0, "memory_mib": 64, "cpus": [[0, 0, 0, {0}]]}],
           "reserved": set()}
    assert topology_from_dict(odd).cells[0].cpus[0].siblings == frozenset({0})
    with pytest.raises((TypeError, KeyError)):
        topology_from_dict({"cells": 7})   # type: ignore[dict-item]


def test_a_decision_reads_the_allocations_of_its_candidates_only(store_url: str,
                                                                tmp_path: Path) -> None:
    """The index comes from the stored summaries; the exact NUMA check decodes the
    allocations of the hosts it reads, not of the whole fleet."""
    from ppec.operator import choose
    from ppec.operator import config as ppec_config
    from ppec.operator.context import Context
    from ppec.operator.fleet.client import Reach
    from ppec.operator.storedhost import StoredHost
    from ppec.wire.vmspec import Pinning
    count = 200
    store = Store(store_url)
    now = time.time()
    settings = SimSettings(count, Path("/nonexistent"))
    for i in range(count):
        store.add_host(Host(settings.name(i), "local"))
    fs.record_round(store, [fs.Success(settings.name(i), now, dict(host_answers(
        settings, i)["host.snapshot"])) for i in range(count)], [], now)
    ctx = Context(store=store, config=ppec_config.load(tmp_path / "none.toml"),
                  reach=Reach(known_hosts=tmp_path / "known_hosts"))
    assert all(isinstance(h, StoredHost) and not h.decoded
               for h in choose.fleet_from_store(ctx, store.hosts(), "stored").hosts)
    wholes = snapshots.stored(ctx)
    # threads prefer: the counts decide (ppec.numa.counted), no allocation is decoded;
    # threads isolate: which threads are free matters, the candidates' are decoded.
    for threads, most in (("prefer", 0), ("isolate", count // 10)):
        fleet = choose.fleet_from_store(ctx, store.hosts(), "stored")
        ask = choose.Ask(choose.shape_from(ctx.config, None, 4, "8G", "10G",
                                           Pinning("dedicated", threads=threads)))
        decision = choose.decide(ctx, fleet, ask, now=now)
        assert decision.ranked
        decoded = [h.name for h in fleet.hosts if isinstance(h, StoredHost) and h.decoded]
        assert len(decoded) <= most and (most == 0 or decoded), (threads, len(decoded))
        # The same decision from whole snapshots, decoded eagerly.
        eager = choose.Fleet([snapshots.to_placement(h, wholes.get(h.name))
                              for h in store.hosts()], {}, {})
        assert choose.decide(ctx, eager, ask, now=now) == decision
    store.close()


def test_a_stored_host_is_a_host_snapshot_in_every_way_that_counts(store: Store) -> None:
    from dataclasses import replace

    from ppec.numa import Allocation
    from ppec.operator.storedhost import StoredHost
    from ppec.placement.model import Summary
    now = time.time()
    whole = _save_all(store, now)
    inv = store.host("h5")
    lazy = snapshots.to_placement(inv, snaprows.placement_views(store, ["h5"])["h5"])
    eager = snapshots.to_placement(inv, {**whole["h5"], "taken_at": now})
    assert isinstance(lazy, StoredHost) and not isinstance(eager, StoredHost)
    assert lazy.summary == Summary.of(eager) and not lazy.decoded   # given, not computed
    assert lazy == eager and eager == lazy and hash(lazy) == hash(eager)
    assert lazy.decoded and lazy.allocations == eager.allocations
    # A changed copy (as the placement benches apply a VM) recomputes its summary.
    extra = Allocation("new", "shared", 2, frozenset(), ((-1, 2048),))
    grown = replace(lazy, allocations=(*lazy.allocations, extra))
    assert grown.allocations[-1] == extra
    assert grown.summary == Summary.of(replace(eager, allocations=grown.allocations))
    assert grown.summary.vms == lazy.summary.vms + 1
    assert grown != lazy


def test_a_snapshot_that_does_not_parse_is_refused_by_the_reader_as_before(
        store: Store) -> None:
    now = time.time()
    for bad in ({"allocations": []}, {"topology": 7, "allocations": []},
                {"topology": answers(0)["topology"], "allocations": [{"vm": "x"}]}):
        store.save_snapshot("h1", now, bad)   # the writer stores it as it came
        view = snaprows.placement_views(store, ["h1"])["h1"]
        with pytest.raises((KeyError, TypeError)) as from_view:
            snapshots.to_placement(store.host("h1"), view)
        with pytest.raises((KeyError, TypeError)) as from_whole:
            snapshots.to_placement(store.host("h1"), {**bad, "taken_at": now})
        assert type(from_view.value) is type(from_whole.value)


def test_host_list_reads_the_part_too(store_url: str, store: Store, tmp_path: Path) -> None:
    """`ppec host list` shows each host's VM count and CPU percent from the part."""
    from ppec.operator import config as ppec_config
    from ppec.operator import listing
    from ppec.operator.context import Context
    from ppec.operator.fleet.client import Reach
    now = time.time()
    whole = _save_all(store, now)
    with direct(store_url) as db:   # one row as a store of schema 7 left it
        db.execute("UPDATE snapshots SET placement = NULL WHERE host = 'h3'")
    ctx = Context(store=store, config=ppec_config.load(tmp_path / "none.toml"),
                  reach=Reach(known_hosts=tmp_path / "known_hosts"))
    rows = {r["name"]: r for r in listing.hosts(ctx)["hosts"]}
    assert {h: (r["state"], r["vms"], r["cpu_percent"]) for h, r in rows.items()} == {
        h: ("fresh", d["vm_count"], d["cpu_percent"]) for h, d in whole.items()}
    assert all(isinstance(r["vms"], int) and r["vms"] > 0 for r in rows.values())


def test_a_round_encodes_its_rows_before_it_holds_the_store(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """While a round computes its parts (seconds at 10,000 hosts), another writer (a
    `vm create` claiming its name) is not kept waiting: each part is computed while a
    second SQLite connection can still take the write lock at once."""
    import sqlite3
    path = tmp_path / "s.db"
    store = Store(str(path))
    for i in range(3):
        store.add_host(Host(f"h{i}", "local"))
    free_while_encoding: list[bool] = []
    real = snaprows.placement_part

    def watched(data: dict[str, Any]) -> dict[str, Any]:
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            free_while_encoding.append(True)
        except sqlite3.OperationalError:   # database is locked
            free_while_encoding.append(False)
        finally:
            other.close()
        return real(data)

    monkeypatch.setattr(snaprows, "placement_part", watched)
    now = time.time()
    fs.record_round(store, [fs.Success(f"h{i}", now, answers(i)) for i in range(3)], [], now)
    store.save_snapshot("h0", now + 1, answers(0))
    assert free_while_encoding == [True] * 4
    assert set(snaprows.placement_views(store)) == {"h0", "h1", "h2"}
    store.close()
