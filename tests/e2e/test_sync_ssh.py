"""`ppec sync` over thirty simulated hosts, each a real sshd on its own loopback address."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.fleet import make_fleet
from tests.realparts import TEST_NODE_URI, Cli, make_key


def test_sync_thirty_hosts_then_three_down(cli: Cli, tmp_path: Path, sshd_ready: None) -> None:
    key = tmp_path / "operator_ed25519"
    hosts = make_fleet(tmp_path / "fleet", 30, TEST_NODE_URI, make_key(key))
    try:
        for h in hosts:
            cli.ok(*h.add_args(key), "--accept-new-host-key")
        cli.ok("vm", "create", "one", "--flavor", "tiny", "--host", "h7")
        first = json.loads(cli.ok("sync", "-o", "json").stdout)["hosts"]
        assert len(first) == 30 and all(r["state"] == "fresh" for r in first)
        assert {r["host"]: r["vms"] for r in first}["h7"] == 1
        table = cli.ok("sync").stdout.splitlines()
        assert table[0].split()[:3] == ["HOST", "STATE", "VMS"] and len(table) == 31
        with __import__("sqlite3").connect(cli.db) as db:
            before = dict(db.execute("SELECT host, taken_at FROM snapshots"))

        down = [hosts[3], hosts[14], hosts[25]]
        for h in down:
            h.sshd.stop()
        done = cli.run("sync", "-o", "json")
        assert done.returncode == 5, done.stderr
        rows = {r["host"]: r for r in json.loads(done.stdout)["hosts"]}
        failed = sorted(n for n, r in rows.items() if r["state"] == "failed")
        assert failed == ["h15", "h26", "h4"]
        assert all("cannot reach root@127.0.0." in rows[n]["error"] for n in failed)
        with __import__("sqlite3").connect(cli.db) as db:
            after = dict(db.execute("SELECT host, taken_at FROM snapshots"))
        updated = {n for n in after if after[n] > before[n]}
        assert updated == {h.name for h in hosts} - set(failed)
        assert all(after[n] == before[n] for n in failed)
        listed = {h["name"]: h for h in json.loads(cli.ok("host", "list", "-o",
                                                          "json").stdout)["hosts"]}
        assert listed["h7"]["vms"] == 1 and listed["h7"]["state"] == "fresh"
    finally:
        for h in hosts:
            h.sshd.stop()
            h.agent.kill()
