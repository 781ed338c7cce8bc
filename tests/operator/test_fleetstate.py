"""The service's fleet state on both store backends: batched rounds, back-off, alerts."""

from __future__ import annotations

import pytest

from ppec.operator.store import Host, Store
from ppec.operator.store import fleetstate as fs


@pytest.fixture
def store(store_url: str) -> Store:
    s = Store(store_url)
    for name in ("h1", "h2", "h3"):
        s.add_host(Host(name, "local"))
    return s


def test_a_round_stores_snapshots_and_status_and_backs_off_failures(store: Store) -> None:
    fs.record_round(store, [fs.Success("h1", 100.0, {"x": 1}), fs.Success("gone", 1.0, {})],
                    [fs.Failure("h2", "UNREACHABLE", "down")], now=100.0,
                    backoff_base=5, backoff_cap=60)
    status = fs.host_statuses(store)
    assert set(status) == {"h1", "h2"}   # a host no longer in the inventory is dropped
    assert (status["h1"].state, status["h1"].last_ok, status["h1"].failures) == ("ok", 100, 0)
    assert (status["h2"].state, status["h2"].failures, status["h2"].next_attempt) == \
        ("failed", 1, 105.0)
    assert store.snapshots()["h1"] == (100.0, {"x": 1})
    for n, now in enumerate((110.0, 130.0, 200.0, 400.0), start=2):
        fs.record_round(store, [], [fs.Failure("h2", "UNREACHABLE", "down")], now=now,
                        backoff_base=5, backoff_cap=60)
        assert fs.host_statuses(store)["h2"].failures == n
        assert fs.host_statuses(store)["h2"].next_attempt == now + min(60, 5 * 2 ** (n - 1))
    fs.record_round(store, [fs.Success("h2", 500.0, {})], [], now=500.0)
    back = fs.host_statuses(store)["h2"]
    assert (back.state, back.failures, back.next_attempt, back.error) == ("ok", 0, 0, "")


def test_alerts_open_update_and_resolve(store: Store) -> None:
    opened, resolved = fs.sync_alerts(store, "h1", "drift", [("VCPUS", "vm1", "2 != 4"),
                                                             ("DOMAIN_MISSING", "vm2", "")], 10)
    assert sorted(a.code for a in opened) == ["DOMAIN_MISSING", "VCPUS"] and resolved == []
    opened, resolved = fs.sync_alerts(store, "h1", "drift", [("VCPUS", "vm1", "2 != 8")], 20)
    assert opened == [] and [(a.code, a.resolved_at) for a in resolved] == \
        [("DOMAIN_MISSING", 20.0)]
    # Another source on the same host is independent.
    fs.sync_alerts(store, "h1", "agent", [("AGENT_OUTDATED", "agent", "")], 20)
    still = {a.code: a for a in fs.alerts(store)}
    assert set(still) == {"VCPUS", "AGENT_OUTDATED"}
    assert (still["VCPUS"].first_seen, still["VCPUS"].last_seen, still["VCPUS"].detail) == \
        (10.0, 20.0, "2 != 8")
    # The same alert coming back after resolution is a new one.
    opened, _ = fs.sync_alerts(store, "h1", "drift", [("VCPUS", "vm1", "x"),
                                                      ("DOMAIN_MISSING", "vm2", "")], 30)
    assert [a.code for a in opened] == ["DOMAIN_MISSING"]
    every = fs.alerts(store, open_only=False, host="h1")
    assert len(every) == 4 and len({a.id for a in every}) == 4


def test_job_runs_count(store: Store) -> None:
    fs.record_job(store, "snapshots", 1.0, 0.5, True, hosts=3)
    fs.record_job(store, "snapshots", 2.0, 0.7, False, hosts=3, failed=3, error="boom")
    (run,) = fs.jobs(store)
    assert (run.runs, run.failures, run.ok, run.duration, run.error) == \
        (2, 1, False, 0.7, "boom")
