"""Two `ppec serve` on one store: only the leader runs jobs (calls counted at the agents,
told apart by the SSH command each asked for); kill -9 the leader and the other leads
within one interval. On PostgreSQL (advisory lock) and SQLite (file lock)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import fresh_pg_database
from tests.realparts import TEST_NODE_URI, Cli, make_key, wait_until
from tests.service.serving import Host, Service, add_hosts, make_fleet, stop_fleet

INTERVAL = 1.0
JOBS = ("snapshots", "drift", "agent_files")   # one call per host per round each
FAST = {"snapshot_interval": INTERVAL, "drift_interval": INTERVAL,
        "agent_check_interval": INTERVAL, "jitter": 0.0}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, cli: Cli) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(cli.db)
        return
    request.getfixturevalue("pg_ready")
    with fresh_pg_database("ppec_serve") as url:
        yield url


def calls(hosts: list[Host], tag: str) -> list[int]:
    return [h.counter.calls[tag] if h.counter else 0 for h in hosts]


def test_one_leader_runs_jobs_and_the_other_takes_over(
        cli: Cli, tmp_path: Path, store: str, sshd_ready: None) -> None:
    key = tmp_path / "operator_ed25519"
    hosts = make_fleet(tmp_path / "fleet", 2, TEST_NODE_URI, make_key(key))
    cli.env["PPEC_DB"] = store
    a = Service(cli, tmp_path / "serve", FAST, tag="A", db=store)
    b = Service(cli, tmp_path / "serve", FAST, tag="B", db=store)
    try:
        add_hosts(cli, hosts, key)
        a.start()
        b.start()
        wait_until(lambda: len(a.events("leader")) + len(b.events("leader")) == 1
                   and (a.events("follower") or b.events("follower")), 30, "one leader")
        leader, follower = (a, b) if a.events("leader") else (b, a)
        for job in JOBS:
            leader.wait_rounds(5, job)
        # Every job on every host, from the leader only; the follower never connected.
        assert all(n >= 15 for n in calls(hosts, leader.tag)), calls(hosts, leader.tag)
        assert calls(hosts, follower.tag) == [0, 0]
        assert all(h.counter and h.counter.connections[follower.tag] == 0 for h in hosts)
        assert follower.rounds() == [] and follower.proc and follower.proc.poll() is None

        assert leader.signal(signal.SIGKILL) == -signal.SIGKILL
        killed = time.time()
        wait_until(lambda: follower.events("leader"), 10, "the follower leads")
        led = datetime.fromisoformat(follower.events("leader")[0]["time"]).timestamp()
        # The follower tries the lock every interval: it leads within one of the death
        # (the margin is for the lock query itself on a busy machine).
        assert led - killed <= INTERVAL + 0.5, led - killed
        for job in JOBS:
            follower.wait_rounds(3, job)
        assert all(n >= 9 for n in calls(hosts, follower.tag))
        counted = calls(hosts, leader.tag)
        follower.wait_rounds(5)
        assert calls(hosts, leader.tag) == counted   # the dead one really is dead
    finally:
        a.stop()
        b.stop()
        stop_fleet(hosts)
