"""`ppec vm stats` / `ppec host top` through real sshd and the forced command: the stats
method passes the proxy, and a dead agent or a dead sshd is exit 1 naming the host."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.fleet import SimHost, make_fleet
from tests.realparts import TEST_NODE_URI, Cli, make_key


@pytest.fixture
def host(tmp_path: Path, sshd_ready: None) -> Iterator[tuple[SimHost, Path]]:
    key = tmp_path / "operator_ed25519"
    pub = make_key(key)
    (h,) = make_fleet(tmp_path / "fleet", 1, TEST_NODE_URI, pub)
    yield h, key
    h.sshd.stop()
    h.agent.kill()


def test_stats_over_ssh_and_each_dead_part_is_exit_1(cli: Cli,
                                                     host: tuple[SimHost, Path]) -> None:
    h, key = host
    cli.ok(*h.add_args(key), "--accept-new-host-key")
    cli.ok("vm", "create", "web-1", "--flavor", "tiny")
    doc = json.loads(cli.ok("vm", "stats", "web-1", "--interval", "0.3", "-o",
                            "json").stdout)
    assert [(v["name"], v["host"], v["state"]) for v in doc["vms"]] == [
        ("web-1", h.name, "running")]
    top = json.loads(cli.ok("host", "top", h.name, "--interval", "0.3", "-o", "json").stdout)
    assert [v["name"] for v in top["vms"]] == ["web-1"]

    h.agent.kill()          # sshd answers, the forced command finds no agent
    done = cli.run("vm", "stats", "web-1", "-o", "json")
    assert done.returncode == 1 and done.stdout == ""
    err = json.loads(done.stderr.strip())["error"]
    assert (err["code"], err["host"]) == ("AGENT_UNREACHABLE", h.name)
    h.sshd.stop()           # nothing answers at all
    done = cli.run("host", "top", h.name)
    assert done.returncode == 1 and done.stderr.startswith(f"ppec: error: {h.name}: "), \
        done.stderr
