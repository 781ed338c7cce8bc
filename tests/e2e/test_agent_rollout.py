"""A 10-host rollout behind real sshd (forced command), `--canary 2`, of a release whose
agent cannot start: both canaries roll back by themselves, the other eight hosts are not
tried, and nothing of theirs changed: files, releases, boot id, PID."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ppec.wire import bundle as files
from tests.agent import syncparts as sp
from tests.agent.test_agent_sync import old_copy
from tests.e2e.fleet import SimHost, make_fleet
from tests.realparts import TEST_NODE_URI, Cli, make_key


def _seen(h: SimHost, site: Path) -> dict[str, Any]:
    m = sp.manifest(h.agent)
    releases = sp.releases_dir(h.agent)
    return {"boot_id": m["boot_id"], "pid": m["pid"], "digest": m["digest"],
            "files": files.manifest(site / "ppec"),
            "releases": sorted(p.name for p in releases.iterdir()),
            "pointer": (releases / "pointer.json").read_bytes()}


def test_ten_host_rollout_stops_at_failed_canaries(cli: Cli, tmp_path: Path,
                                                   sshd_ready: None) -> None:
    key = tmp_path / "operator_ed25519"
    sites = {f"h{i}": old_copy(tmp_path / f"site{i}") for i in range(1, 11)}
    hosts = make_fleet(tmp_path / "fleet", 10, TEST_NODE_URI, make_key(key),
                       env=lambda name: {"PYTHONPATH": str(sites[name])})
    try:
        for h in hosts:
            cli.ok(*h.add_args(key), "--accept-new-host-key")
        before = {h.name: _seen(h, sites[h.name]) for h in hosts}
        bad_site = sp.broken_copy(tmp_path / "bad")
        bad = files.digest("0.2.0", files.manifest(bad_site / "ppec"))
        cli.env["PYTHONPATH"] = str(bad_site)
        done = cli.run("agent", "sync", "--canary", "2", "--max-parallel", "4", "-o", "json")
        assert done.returncode == 5, (done.stdout, done.stderr)
        rows = {r["host"]: r for r in json.loads(done.stdout)["hosts"]}
        assert len(rows) == 10
        canaries = sorted(n for n, r in rows.items() if r["state"] == "failed")
        assert len(canaries) == 2, rows
        for name in canaries:
            assert rows[name]["code"] == "ROLLED_BACK", rows[name]
        for name, r in rows.items():
            if name not in canaries:
                assert (r["state"], r["code"]) == ("not tried", "CANARY_FAILED"), r
                assert "not tried: canary" in r["error"]
        by_name = {h.name: h for h in hosts}
        for name in canaries:   # back on their old files, serving, the failure recorded
            h = by_name[name]
            now = sp.wait_answer(h.agent)
            assert now["digest"] == before[name]["digest"]
            assert files.manifest(sites[name] / "ppec") == before[name]["files"]
            assert [f["digest"] for f in now["release"]["failed"]] == [bad]
        for h in hosts:
            if h.name not in canaries:
                assert _seen(h, sites[h.name]) == before[h.name], h.name
    finally:
        for h in hosts:
            h.sshd.stop()
            sp.stop(h.agent)
