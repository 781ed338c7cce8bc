"""Live migration between real libvirtds (issue 26), each behind its own agent and sshd: a
booted guest with a NIC, dedicated pins and a data disk moves and keeps answering ping
from the test's namespace; its pins on the target are the target's free CPUs (live XML
and /proc); a pattern its disk held reads back after; nothing stays on the source."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ppec.agent.config import MIGRATION_STEPS
from tests.agent.syncparts import call
from tests.cloudinit import cloudinit_reason
from tests.migparts import MigHost, Peer, make_hosts
from tests.netparts import Lan, Pinger, lan, net_reason
from tests.policy import as_, install_policy, make_people
from tests.realparts import PPEC, Cli, make_key, wait_until
from tests.service.serving import Service


@dataclass
class Fleet:
    cli: Cli
    hosts: list[MigHost]
    guest: Path

    def host(self, name: str) -> MigHost:
        return next(h for h in self.hosts if h.name == name)

    def create(self, name: str, host: str, *extra: str, cmdline: str = "") -> dict[str, object]:
        done = self.cli.ok(
            "vm", "create", name, "--host", host, "--cpus", "1", "--memory", "160M",
            "--disk", "16M", "--kernel", str(self.guest / "vmlinuz"), "--initrd",
            str(self.guest / "initrd.img"), "--cmdline", f"console=ttyS0 {cmdline}".strip(),
            *extra, "-o", "json")
        return dict(json.loads(done.stdout))

    def where(self, name: str) -> dict[str, tuple[str | None, str | None]]:
        """host -> (libvirt's state of the domain, the ledger's state), for every host."""
        return {h.name: (h.peer.state(name), h.agent.ledger_rows().get(name, (None,))[0])
                for h in self.hosts}


@pytest.fixture
def blue() -> Iterator[Lan]:
    for reason in (net_reason(), cloudinit_reason()):
        if reason:
            pytest.skip(reason)
    with lan("10.98.0.1/24") as net:
        yield net


def fleet_of(cli: Cli, root: Path, guest: Path, peers: list[Peer], blue: Lan,
             networks: dict[str, bool] | None = None, **more: object) -> Fleet:
    """Hosts on ``peers``; each has VRF blue's bridge unless ``networks[host]`` is False."""
    key = root / "operator_ed25519"
    pub = make_key(key)

    def extra(name: str) -> dict[str, object]:
        has = (networks or {}).get(name, True)
        return {"image_dir": str(guest),
                "networks": {"blue": {"bridge": blue.bridge}} if has else {}, **more}
    hosts = make_hosts(root / "fleet", peers, pub, extra)
    for h in hosts:
        cli.ok(*h.add_args(key), "--accept-new-host-key", "--vrf", "blue")
    cli.ok("ip", "pool", "add", "blue-1", "--vrf", "blue", "--cidr", "10.98.0.0/24",
           "--gateway", "10.98.0.1")
    return Fleet(cli, hosts, guest)


@pytest.fixture
def fleet(cli: Cli, qemu_dir: Path, guest: Path, libvirt_peers: list[Peer], blue: Lan,
          sshd_ready: None) -> Iterator[Fleet]:
    made = fleet_of(cli, qemu_dir, guest, libvirt_peers[:2], blue)
    yield made
    stop(made, qemu_dir)


def stop(made: Fleet, root: Path) -> None:
    for h in made.hosts:
        h.agent.kill()
        h.sshd.stop()
        h.peer.clean(root)


def vcpu_threads_cpus(peer: Peer, name: str) -> set[str]:
    """Cpus_allowed_list of each vCPU thread of the domain's QEMU, read from /proc."""
    pid = int(peer.virsh("qemu-monitor-command", name, "--hmp", "info cpus").split(
        "thread_id=")[1].split()[0])
    return {Path(f"/proc/{pid}/status").read_text().split("Cpus_allowed_list:")[1]
            .split()[0]}


def test_a_guest_with_a_nic_pins_and_a_data_disk_moves_live(fleet: Fleet, blue: Lan) -> None:
    cli, h1, h2 = fleet.cli, fleet.host("h1"), fleet.host("h2")
    # h2 already runs a dedicated VM on CPU 0, the CPU the VM holds on h1: copied
    # verbatim, its pins would double-book that CPU (Nova bug 1289064).
    fleet.create("blocker", "h2", "--numa", "dedicated")
    vm = fleet.create("mover", "h1", "--numa", "dedicated", cmdline="ppec.pattern=vdb")
    cli.ok("disk", "attach", "mover", "--size", "64M")
    address = str(vm["nics"][0]["address"]).split("/")[0]  # type: ignore[index]
    mac = str(vm["nics"][0]["mac"])  # type: ignore[index]
    wait_until(lambda: "PPEC-PATTERN-OK vdb" in h1.agent.console("mover").text(), 120,
               "the guest wrote its pattern to vdb and read it back")
    blue.wait_ping(address, timeout=120)
    assert "cpuset='0'" in h1.peer.virsh("dumpxml", "mover")
    assert "cpuset='0'" in h2.peer.virsh("dumpxml", "blocker")

    pinger = blue.pinger(address)
    time.sleep(1)
    start = time.time()
    done = cli.run("vm", "migrate", "mover", "-o", "json")
    end = time.time()
    time.sleep(1.5)
    answers = pinger.stop()
    assert done.returncode == 0, done.stderr
    moved = json.loads(done.stdout)
    assert (moved["from"], moved["host"], moved["cpus"]) == ("h1", "h2", [1])
    assert moved["downtime_ms"] >= 0 and moved["total_ms"] > 0 and moved["bytes"] > 0
    gap = Pinger.longest_gap(answers, start, end + 1.5)
    print(f"migration {end - start:.1f} s; longest time without a ping answer {gap:.2f} s")
    assert any(t < start for t in answers) and any(t > end for t in answers)
    assert blue.arp()[address] == mac

    # The target's pins: live XML and the vCPU thread's affinity in /proc.
    xml = h2.peer.virsh("dumpxml", "mover")
    assert re.search(r"<vcpupin vcpu='0' cpuset='1'/>", xml), xml
    assert re.search(r"<emulatorpin cpuset='1'/>", xml), xml
    assert vcpu_threads_cpus(h2.peer, "mover") == {"1"}
    assert str(h2.agent.storage / "mover.qcow2") in xml and mac in xml
    # The pattern written before the move is read back from the copied disk after it.
    log = h2.agent.console("mover")
    wait_until(lambda: "PPEC-PATTERN-OK vdb" in log.text(), 60,
               "the guest read its pattern back on the target")
    assert "PPEC-PATTERN-BAD" not in log.text()

    # One owner, everywhere: libvirt, both ledgers, the store, vm show.
    assert fleet.where("mover") == {"h1": (None, None), "h2": ("running", "present")}
    assert json.loads(cli.ok("vm", "show", "mover", "-o", "json").stdout)["host"] == "h2"
    listed = json.loads(cli.ok("vm", "list", "-o", "json").stdout)
    assert [v["host"] for v in listed["vms"] if v["name"] == "mover"] == ["h2"]
    assert not [f for f in h1.agent.volumes() if f.startswith("mover")]
    disks = json.loads(cli.ok("disk", "list", "mover", "-o", "json").stdout)
    assert disks["host"] == "h2"
    [data] = [d for d in disks["disks"] if d["kind"] == "data"]
    assert (data["target"], data["state"], data["live"], data["persistent"]) == (
        "vdb", "attached", True, True)
    assert Path(data["path"]).parent == h2.agent.storage
    # The API (`ppec serve`, on the same store) names the new host too.
    service = Service(cli, h1.agent.root.parent.parent / "serve",
                      {"snapshot_interval": 1.0, "drift_interval": 60.0,
                       "agent_check_interval": 60.0})
    try:
        service.start()
        port = service.http_port()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/vms/mover",
                                    timeout=10) as r:
            assert json.loads(r.read())["host"] == "h2"
    finally:
        service.stop()

    cli.ok("vm", "delete", "mover")
    assert not [f for f in h2.agent.volumes() if f.startswith("mover")]
    assert fleet.where("mover") == {"h1": (None, None), "h2": (None, None)}


def test_a_target_without_the_network_is_refused_before_anything_is_copied(
        cli: Cli, qemu_dir: Path, guest: Path, libvirt_peers: list[Peer], blue: Lan,
        sshd_ready: None) -> None:
    made = fleet_of(cli, qemu_dir, guest, libvirt_peers[:2], blue, networks={"h2": False})
    try:
        made.create("stay", "h1")
        h1, h2 = made.host("h1"), made.host("h2")
        # Placement knows h2 lacks the VRF's network: it never picks it, --to or not.
        for args in (("--to", "h2"), ()):
            done = cli.run("vm", "migrate", "stay", *args, "-o", "json")
            assert done.returncode == 3, done.stderr   # NO_CAPACITY
            err = json.loads(done.stderr)["error"]
            assert err["details"]["rejected"] == [{
                "host": "h2", "rule": "network", "reason": "h2: no network for VRF blue"}]
        # The target agent refuses on its own too (a stale view would not stop it): the
        # claim, asked straight of h2's agent with what h1 says of the VM.
        info = call(h1.agent.socket, "vm.migrate_info", {"name": "stay"})["result"]
        reply = call(h2.agent.socket, "vm.incoming", {
            "name": "stay", "document": info["document"], "uuid": info["uuid"],
            "created_at": info["created_at"], "xml": info["xml"], "source": "h1",
            "disks": info["disks"], "seed": info["seed"]})
        assert reply["error"]["code"] == "NETWORK_MISSING", reply
        assert made.where("stay") == {"h1": ("running", "present"), "h2": (None, None)}
        assert h2.agent.volumes() == set()
        show = json.loads(cli.ok("vm", "show", "stay", "-o", "json").stdout)
        assert (show["host"], show["state"]) == ("h1", "running")
    finally:
        stop(made, qemu_dir)


def test_a_migration_past_its_timeout_is_aborted_and_the_vm_stays(fleet: Fleet,
                                                                 blue: Lan) -> None:
    cli, h2 = fleet.cli, fleet.host("h2")
    vm = fleet.create("slow", "h1", "--numa", "dedicated")
    address = str(vm["nics"][0]["address"]).split("/")[0]  # type: ignore[index]
    blue.wait_ping(address, timeout=120)
    # 1 MiB/s for 160 MiB of memory: far past a 2 s timeout.
    done = cli.run("vm", "migrate", "slow", "--bandwidth", "1", "--timeout", "2",
                   "-o", "json")
    assert done.returncode != 0
    err = json.loads(done.stderr)["error"]
    assert err["code"] == "MIGRATE_TIMEOUT", err
    assert fleet.where("slow") == {"h1": ("running", "present"), "h2": (None, None)}
    assert not [f for f in h2.agent.volumes() if f.startswith("slow")]
    assert blue.ping(address, count=3)
    assert json.loads(cli.ok("vm", "show", "slow", "-o", "json").stdout)["host"] == "h1"
    # And it still moves when asked again without the limit.
    cli.ok("vm", "migrate", "slow")
    assert fleet.where("slow") == {"h1": (None, None), "h2": ("running", "present")}


def _stopped(pid: int) -> bool:
    """The process is stopped (SIGSTOP at its fault step)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


def _one_owner(fleet: Fleet, name: str, host: str) -> None:
    """The VM runs on ``host`` only, owned by its ledger only, with no claim or files left
    anywhere else; the store agrees."""
    other = next(h.name for h in fleet.hosts if h.name != host)
    assert fleet.where(name) == {host: ("running", "present"), other: (None, None)}
    assert not [f for f in fleet.host(other).agent.volumes() if f.startswith(name)]
    show = json.loads(fleet.cli.ok("vm", "show", name, "-o", "json").stdout)
    assert (show["host"], show["state"], show["ledger"]) == (host, "running", "present")
    for h in fleet.hosts:
        assert "incoming" not in {s for s, _ in h.agent.ledger_rows().values()}
        assert "migrating" not in {s for s, _ in h.agent.ledger_rows().values()}


# Each step a fault can stop an agent at (docs/migration.md has the table): the agent
# that stops, and whether the guest had already moved (the retry only settles) or not
# (the retry migrates it).
STEPS = [("h2", "incoming-claimed", False), ("h2", "incoming-prepared", False),
         ("h1", "migrate-marked", False), ("h1", "migrate-copied", True),
         ("h2", "incoming-settle", True), ("h1", "migrate-settle", True)]


def test_every_fault_step_of_a_migration_is_tested() -> None:
    assert tuple(step for _, step, _ in STEPS) == MIGRATION_STEPS


@pytest.mark.parametrize(("who", "step", "moved"), STEPS)
def test_an_agent_killed_at_each_step_ends_with_one_owner(fleet: Fleet, who: str,
                                                          step: str, moved: bool) -> None:
    cli = fleet.cli
    fleet.create("cut", "h1", "--numa", "dedicated")
    victim = fleet.host(who)
    victim.config(fault_stop_at=step)
    assert victim.agent.proc is not None
    pid = victim.agent.proc.pid
    run = subprocess.Popen([PPEC, "vm", "migrate", "cut", "--to", "h2", "-o", "json"],
                           env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    wait_until(lambda: _stopped(pid), 120, f"{who}'s agent stopped at {step}")
    os.kill(pid, signal.SIGKILL)
    try:
        run.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        run.kill()
        run.communicate()
    victim.agent.proc = None
    victim.config(fault_stop_at="")
    # A retry completes the move (or finds it complete).
    again = cli.run("vm", "migrate", "cut", "--to", "h2", "-o", "json")
    assert again.returncode == 0, again.stderr
    done = json.loads(again.stdout)
    assert done["host"] == "h2"
    assert ("note" in done) is moved, done   # settled an earlier move, or moved it now
    _one_owner(fleet, "cut", "h2")
    assert _cpus(fleet.host("h2")) == [(0, "cut")]
    assert _cpus(fleet.host("h1")) == []


def _cpus(h: MigHost) -> list[tuple[int, str]]:
    with contextlib.closing(sqlite3.connect(h.agent.ledger)) as db:
        return [(int(c), str(v)) for c, v in db.execute("SELECT cpu, vm FROM vm_cpus")]


def _copy_under_way(fleet: Fleet) -> subprocess.Popen[bytes]:
    """A `vm migrate` of a new VM "cut" to h2, slowed to 8 MiB/s, once libvirt copies."""
    h1 = fleet.host("h1")
    fleet.create("cut", "h1")
    run = subprocess.Popen([PPEC, "vm", "migrate", "cut", "--bandwidth", "8", "-o", "json"],
                           env=fleet.cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: h1.agent.ledger_rows().get("cut", ("",))[0] == "migrating", 60,
               "the source marked the VM migrating")
    wait_until(lambda: "Unbounded" in h1.peer.virsh("domjobinfo", "cut", check=False), 60,
               "libvirt copying the guest")
    return run


def _retry_finds_it_moved(fleet: Fleet) -> None:
    """The retry does not migrate again: it waits for the copy the cut run started and
    settles both sides."""
    again = fleet.cli.run("vm", "migrate", "cut", "-o", "json")
    assert again.returncode == 0, again.stderr
    done = json.loads(again.stdout)
    assert (done["host"], done["note"]) == ("h2", "an earlier run had moved it; settled")
    _one_owner(fleet, "cut", "h2")


def test_the_cli_killed_while_the_guest_is_copied_is_finished_by_a_retry(
        fleet: Fleet) -> None:
    run = _copy_under_way(fleet)
    run.kill()
    run.communicate()
    # The copy goes on without the CLI.
    assert "Unbounded" in fleet.host("h1").peer.virsh("domjobinfo", "cut", check=False)
    _retry_finds_it_moved(fleet)


def test_the_source_agent_killed_during_the_copy(fleet: Fleet) -> None:
    """libvirtd drives a peer-to-peer migration: the source agent's death does not stop
    it; the restarted agent finds the job running, and settles once it ends."""
    h1 = fleet.host("h1")
    run = _copy_under_way(fleet)
    h1.agent.kill()
    run.communicate(timeout=120)
    h1.agent.start()
    _retry_finds_it_moved(fleet)


def test_a_migration_under_maker_checker_waits_for_a_second_person(
        cli: Cli, qemu_dir: Path, guest: Path, libvirt_peers: list[Peer], blue: Lan,
        sshd_ready: None) -> None:
    people = make_people(qemu_dir)
    approvers = install_policy(cli, qemu_dir, people, vm_operations=("migrate",))
    made = fleet_of(cli, qemu_dir, guest, libvirt_peers[:2], blue,
                    approvers_file=str(approvers))
    try:
        made.create("mc", "h1")
        asked = as_(cli, people["alice"], "vm", "migrate", "mc", "-o", "json")
        assert asked.returncode == 4, asked.stderr  # type: ignore[attr-defined]
        request = json.loads(asked.stdout)  # type: ignore[attr-defined]
        assert request["payload"]["params"]["target"] == "h2"   # placement chose, now
        assert made.where("mc") == {"h1": ("running", "present"), "h2": (None, None)}
        # Its maker cannot approve it; the agent refuses a migration without approval.
        own = as_(cli, people["alice"], "request", "approve", str(request["id"]))
        assert own.returncode != 0 and "cannot approve" in own.stderr  # type: ignore[attr-defined]
        bare = call(made.host("h1").agent.socket, "vm.migrate", {
            "name": "mc", "target": "h2", "uri": "qemu:///x", "xml": "<domain/>"})
        assert bare["error"]["code"] == "FORBIDDEN" and "approved request" in \
            bare["error"]["message"], bare
        done = as_(cli, people["bob"], "request", "approve", str(request["id"]))
        assert done.returncode == 0, done.stderr  # type: ignore[attr-defined]
        assert made.where("mc") == {"h1": (None, None), "h2": ("running", "present")}
        assert json.loads(cli.ok("vm", "show", "mc", "-o", "json").stdout)["host"] == "h2"
        cli.ok("audit", "verify")
    finally:
        stop(made, qemu_dir)
