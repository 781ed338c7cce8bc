"""The maker-checker happy path end to end: two operator keys, a real QEMU host reached over
real sshd, the deletion confirmed with virsh, the audit trail verified."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.e2e.fleet import make_fleet
from tests.netparts import Lan
from tests.policy import install_policy, make_people
from tests.realparts import QEMU_URI, Cli, domain_state, make_key, unique, virsh


def test_maker_creates_checker_approves_agent_deletes(cli: Cli, qemu_dir: Path,
                                                      sshd_ready: None, blue_lan: Lan) -> None:
    people = make_people(qemu_dir)
    transport = qemu_dir / "transport_ed25519"
    approvers = install_policy(cli, qemu_dir, people)
    (host,) = make_fleet(qemu_dir / "fleet", 1, QEMU_URI, make_key(transport),
                         extra={"approvers_file": str(approvers),
                                "networks": {"blue": {"bridge": blue_lan.bridge}}})
    try:
        cli.ok(*host.add_args(transport), "--accept-new-host-key", "--vrf", "blue")
        cli.ok("ip", "pool", "add", "blue-1", "--vrf", "blue", "--cidr", "10.20.0.0/24",
               "--gateway", "10.20.0.1", "--dns", "10.20.0.53")
        name = unique("web")
        cli.ok("vm", "create", name, "--cpus", "1", "--memory", "64M", "--disk", "16M")
        assert domain_state(name) == "running"
        # The seed ISO QEMU has as its CD-ROM holds the address the store gave the VM.
        iso = [p for p in virsh("domblklist", name).split() if p.endswith("-seed.iso")]
        assert len(iso) == 1
        network = json.loads(subprocess.run(
            ["isoinfo", "-R", "-i", iso[0], "-x", "/network-config"],
            capture_output=True, text=True, check=True).stdout)["ethernets"]["nic0"]
        assert network["addresses"] == ["10.20.0.2/24"]
        assert network["routes"] == [{"to": "0.0.0.0/0", "via": "10.20.0.1"}]
        assert network["nameservers"] == {"addresses": ["10.20.0.53"]}
        meta = subprocess.run(["isoinfo", "-R", "-i", iso[0], "-x", "/meta-data"],
                              capture_output=True, text=True, check=True).stdout
        assert f'local-hostname: "{name}"' in meta
        owned = json.loads(cli.ok("ip", "list", "-o", "json").stdout)["addresses"]
        assert [(a["address"], a["owner"]) for a in owned] == [("10.20.0.2", name)]
        made = cli.run("--identity", str(people["alice"]), "vm", "delete", name, "-o", "json")
        assert made.returncode == 4, made.stderr
        rid = json.loads(made.stdout)["id"]
        assert domain_state(name) == "running"
        done = cli.run("--identity", str(people["bob"]), "request", "approve", str(rid))
        assert done.returncode == 0, done.stderr
        assert f"request {rid} approved by bob and executed" in done.stdout
        assert domain_state(name) is None
        assert host.agent.ledger_rows() == {}
        assert host.agent.volumes() == set()            # disk and seed ISO both gone
        assert json.loads(cli.ok("ip", "list", "-o", "json").stdout)["addresses"] == []
        log = json.loads(cli.ok("audit", "list", "-o", "json").stdout)["entries"]
        assert [e["action"] for e in log] == ["request", "approve", "execute", "executed"]
        cli.ok("audit", "verify")
    finally:
        host.sshd.stop()
        host.agent.kill()
