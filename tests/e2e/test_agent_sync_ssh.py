"""`ppec agent sync` over SSH: three hosts behind real sshd (forced command), each agent
running an older copy of ppec, brought to this version; the first is the canary."""

from __future__ import annotations

import json
from pathlib import Path

import ppec
from ppec.wire import bundle as files
from tests.agent.test_agent_sync import old_copy
from tests.e2e.fleet import make_fleet
from tests.realparts import TEST_NODE_URI, Cli, make_key


def test_agent_sync_over_ssh(cli: Cli, tmp_path: Path, sshd_ready: None) -> None:
    key = tmp_path / "operator_ed25519"
    sites = {f"h{i}": old_copy(tmp_path / f"site{i}") for i in (1, 2, 3)}
    hosts = make_fleet(tmp_path / "fleet", 3, TEST_NODE_URI, make_key(key),
                       env=lambda name: {"PYTHONPATH": str(sites[name])})
    try:
        for h in hosts:
            cli.ok(*h.add_args(key), "--accept-new-host-key")
        cli.ok("vm", "create", "one", "--flavor", "tiny", "--host", "h2")
        done = json.loads(cli.ok("agent", "sync", "-o", "json").stdout)["hosts"]
        assert [(h["host"], h["state"], h["version"]) for h in done] == [
            (n, "updated", "0.0.9") for n in ("h1", "h2", "h3")]
        want = files.manifest(files.package_root())
        assert all(files.manifest(site / "ppec") == want for site in sites.values())
        status = json.loads(cli.ok("agent", "status", "-o", "json").stdout)["agents"]
        assert {a["version"] for a in status} == {ppec.__version__}
        assert all(h.agent.proc is not None and h.agent.proc.poll() is None for h in hosts)
        listed = json.loads(cli.ok("vm", "list", "-o", "json").stdout)["vms"]
        assert [(v["name"], v["host"]) for v in listed] == [("one", "h2")]
        again = json.loads(cli.ok("agent", "sync", "-o", "json").stdout)["hosts"]
        assert {h["state"] for h in again} == {"current"}
    finally:
        for h in hosts:
            h.sshd.stop()
            h.agent.kill()
