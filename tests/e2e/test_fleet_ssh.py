"""A real fleet on one machine: sshd per simulated host on its own loopback address, each
with its own host key, forced-command operator key, agent, state dir and socket."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from ppec.agent.domxml import NS
from tests.e2e.fleet import SimHost, make_fleet
from tests.realparts import (
    QEMU_URI,
    TEST_NODE_URI,
    Cli,
    domain_state,
    make_key,
    qemu_pid,
    unique,
    virsh,
)


@pytest.fixture
def operator_key(tmp_path: Path, sshd_ready: None) -> tuple[Path, str]:
    key = tmp_path / "operator_ed25519"
    return key, make_key(key)


@pytest.fixture
def qemu_fleet(qemu_dir: Path, operator_key: tuple[Path, str]) -> Iterator[list[SimHost]]:
    hosts = make_fleet(qemu_dir, 3, QEMU_URI, operator_key[1])
    yield hosts
    for h in hosts:
        h.sshd.stop()
        h.agent.kill()


@pytest.fixture
def one_host(tmp_path: Path, operator_key: tuple[Path, str]) -> Iterator[SimHost]:
    (host,) = make_fleet(tmp_path / "fleet", 1, TEST_NODE_URI, operator_key[1])
    yield host
    host.sshd.stop()
    host.agent.kill()


def test_three_hosts_over_ssh_create_list_delete_confirmed_by_virsh(
        cli: Cli, qemu_fleet: list[SimHost], operator_key: tuple[Path, str]) -> None:
    key = operator_key[0]
    for h in qemu_fleet:
        cli.ok(*h.add_args(key), "--accept-new-host-key", "--rack", f"r{h.name[-1]}")
    known = (Path(cli.env["XDG_CONFIG_HOME"]) / "ppec" / "known_hosts").read_text()
    for h in qemu_fleet:
        assert f"[{h.sshd.address}]:{h.sshd.port} ssh-ed25519 " in known

    names = {h.name: unique(f"vm-{h.name}") for h in qemu_fleet}
    for h in qemu_fleet:
        vm = json.loads(cli.ok("vm", "create", names[h.name], "--host", h.name, "--cpus", "1",
                               "--memory", "64M", "--disk", "16M", "-o", "json").stdout)
        assert (vm["host"], vm["state"]) == (h.name, "running")
    for h in qemu_fleet:
        n = names[h.name]
        assert domain_state(n) == "running"
        assert qemu_pid(n) is not None
        owner = ET.fromstring(virsh("dumpxml", n)).findtext(f"metadata/{{{NS}}}vm/{{{NS}}}host")
        assert owner == h.agent.host

    listed = json.loads(cli.ok("vm", "list", "-o", "json").stdout)
    assert sorted((v["name"], v["host"]) for v in listed["vms"]) == sorted(
        (names[h.name], h.name) for h in qemu_fleet)
    assert listed["errors"] == []

    for h in qemu_fleet:
        cli.ok("vm", "delete", names[h.name])
        assert domain_state(names[h.name]) is None
        assert h.agent.volumes() == set()
        assert h.agent.ledger_rows() == {}
    assert json.loads(cli.ok("vm", "list", "-o", "json").stdout)["vms"] == []


def test_unknown_host_key_is_refused_until_accepted(cli: Cli, one_host: SimHost,
                                                    operator_key: tuple[Path, str]) -> None:
    done = cli.run(*one_host.add_args(operator_key[0]))
    assert done.returncode == 1
    assert f"unknown host key for [{one_host.sshd.address}]:{one_host.sshd.port}" in done.stderr
    assert "SHA256:" in done.stderr and "--accept-new-host-key" in done.stderr
    assert json.loads(cli.ok("host", "list", "-o", "json").stdout)["hosts"] == []
    cli.ok(*one_host.add_args(operator_key[0]), "--accept-new-host-key")


def test_changed_host_key_is_refused_and_never_replaced(cli: Cli, one_host: SimHost,
                                                        operator_key: tuple[Path, str]) -> None:
    cli.ok(*one_host.add_args(operator_key[0]), "--accept-new-host-key")
    known_hosts = Path(cli.env["XDG_CONFIG_HOME"]) / "ppec" / "known_hosts"
    before = known_hosts.read_text()
    one_host.sshd.stop()
    one_host.sshd.new_host_key()
    one_host.sshd.start()
    status = cli.run("agent", "status", "h1", "-o", "json")
    assert status.returncode == 1
    row = json.loads(status.stdout)["agents"][0]
    assert row["code"] == "HOST_KEY_CHANGED" and "refusing to connect" in row["error"]
    done = cli.run("vm", "create", "a1", "--flavor", "tiny", "--host", "h1", "-o", "json")
    assert done.returncode == 1, done
    error = json.loads(done.stderr)["error"]
    assert error["code"] == "HOST_KEY_CHANGED" and error["host"] == "h1"
    assert "CHANGED" in error["message"] and error["details"]["expected"].startswith("SHA256:")
    assert known_hosts.read_text() == before
    assert one_host.agent.ledger_rows() == {}


def test_ssh_key_the_host_refuses(cli: Cli, one_host: SimHost, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger_ed25519"
    make_key(stranger)
    done = cli.run(*one_host.add_args(stranger), "--accept-new-host-key")
    assert done.returncode == 1
    assert f"SSH key refused by root@{one_host.sshd.address}:{one_host.sshd.port}" in \
        done.stderr
    assert json.loads(cli.ok("host", "list", "-o", "json").stdout)["hosts"] == []


def test_agent_not_running_behind_sshd(cli: Cli, one_host: SimHost,
                                       operator_key: tuple[Path, str]) -> None:
    cli.ok(*one_host.add_args(operator_key[0]), "--accept-new-host-key")
    one_host.agent.kill()
    done = cli.run("vm", "create", "a1", "--flavor", "tiny", "--host", "h1")
    assert done.returncode == 1
    assert done.stderr.startswith("ppec: error: h1: agent not running: nothing listens on")
    assert cli.store_vms() == []


def test_unreachable_sshd(cli: Cli, one_host: SimHost, operator_key: tuple[Path, str]) -> None:
    cli.ok(*one_host.add_args(operator_key[0]), "--accept-new-host-key")
    one_host.sshd.stop()
    done = cli.run("agent", "status", "-o", "json")
    assert done.returncode == 1
    row = json.loads(done.stdout)["agents"][0]
    assert row["ok"] is False and "cannot reach root@127.0.0.11" in row["error"]


def test_the_operator_key_can_only_run_the_proxy(one_host: SimHost,
                                                 operator_key: tuple[Path, str]) -> None:
    """Whatever command the client asks for, sshd runs the forced proxy command."""
    ping = b'{"v":1,"id":1,"method":"ping","params":{}}\n'
    done = subprocess.run(
        ["ssh", "-i", str(operator_key[0]), "-p", str(one_host.sshd.port),
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", f"root@{one_host.sshd.address}", "echo pwned; id"],
        input=ping, capture_output=True, timeout=60, check=False)
    assert b"pwned" not in done.stdout and b"uid=" not in done.stdout
    assert json.loads(done.stdout.splitlines()[0])["result"]["host"] == one_host.agent.host


def test_partial_fleet_failure_exits_5_and_keeps_the_others(
        cli: Cli, tmp_path: Path, operator_key: tuple[Path, str]) -> None:
    hosts = make_fleet(tmp_path / "fleet", 3, TEST_NODE_URI, operator_key[1])
    try:
        for h in hosts:
            cli.ok(*h.add_args(operator_key[0]), "--accept-new-host-key")
            cli.ok("vm", "create", f"vm-{h.name}", "--host", h.name, "--flavor", "tiny")
        hosts[1].sshd.stop()
        done = cli.run("vm", "list", "-o", "json")
        assert done.returncode == 5
        doc = json.loads(done.stdout)
        assert sorted(v["name"] for v in doc["vms"]) == ["vm-h1", "vm-h3"]
        assert [e["host"] for e in doc["errors"]] == ["h2"]
        table = cli.run("vm", "list")
        assert table.returncode == 5 and "ppec: h2: cannot reach" in table.stderr
    finally:
        for h in hosts:
            h.sshd.stop()
            h.agent.kill()
