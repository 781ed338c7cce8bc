"""`ppec serve` over real sshd hosts in front of real agents: snapshots stay fresh over
connections kept open; a host that goes away is failed, backed off, and comes back."""

from __future__ import annotations

import time
from pathlib import Path

from tests.realparts import TEST_NODE_URI, Cli, make_key, wait_until
from tests.service.serving import (
    Service,
    add_hosts,
    make_fleet,
    snapshot_times,
    statuses,
    stop_fleet,
)

FAST = {"snapshot_interval": 0.5, "drift_interval": 5.0, "agent_check_interval": 5.0,
        "jitter": 0.1, "backoff_base": 1.0, "backoff_cap": 4.0}


def test_fresh_snapshots_warm_connections_backoff_and_recovery(
        cli: Cli, tmp_path: Path, sshd_ready: None) -> None:
    key = tmp_path / "operator_ed25519"
    hosts = make_fleet(tmp_path / "fleet", 3, TEST_NODE_URI, make_key(key))
    service = Service(cli, tmp_path / "serve", FAST)
    try:
        add_hosts(cli, hosts, key)
        logins = {h.name: h.accepted() for h in hosts}   # `host add` logged in once
        started = time.time()
        service.start()
        # Within two rounds every host has a snapshot taken since the service started.
        service.wait_rounds(2)
        assert all(t > started for t in snapshot_times(cli.db).values())
        assert set(snapshot_times(cli.db)) == {"h1", "h2", "h3"}
        assert {h: s[0] for h, s in statuses(cli.db).items()} == \
            {"h1": "ok", "h2": "ok", "h3": "ok"}
        # Connections are kept open: many rounds, two SSH logins per host (one connection
        # for snapshots, one for the drift and agent-file checks).
        service.wait_rounds(6)
        assert {h.name: h.accepted() - logins[h.name] for h in hosts} == \
            {"h1": 2, "h2": 2, "h3": 2}
        assert all(h.counter and h.counter.calls["A"] >= 6 for h in hosts)

        down = hosts[1]
        down.down()
        wait_until(lambda: statuses(cli.db)["h2"][0] == "failed", 30, "h2 failed")
        failed_at = len(service.rounds())
        service.wait_rounds(failed_at + 12)
        rounds = len(service.rounds()) - failed_at + 1
        state, failures, _ = statuses(cli.db)["h2"]
        assert state == "failed"
        assert 1 <= failures < rounds / 2, (failures, rounds)   # backed off
        assert any(e.get("backing_off") == 1 for e in service.rounds()[failed_at:])
        failed = [e for e in service.events("host_failed") if e["host"] == "h2"]
        assert len(failed) == 1 and "127.0.0.12" in failed[0]["error"]
        # The others stay fresh meanwhile.
        before = snapshot_times(cli.db)
        service.wait_rounds(len(service.rounds()) + 2)
        after = snapshot_times(cli.db)
        assert after["h1"] > before["h1"] and after["h3"] > before["h3"]
        assert after["h2"] == before["h2"]

        down.up()
        wait_until(lambda: statuses(cli.db)["h2"][0] == "ok", 30, "h2 back")
        assert snapshot_times(cli.db)["h2"] > after["h2"]
        assert statuses(cli.db)["h2"][1] == 0
        assert [e["host"] for e in service.events("host_recovered")] == ["h2"]
        assert service.proc is not None and service.proc.poll() is None
    finally:
        service.stop()
        stop_fleet(hosts)
