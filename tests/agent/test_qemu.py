"""The agent on this machine's real libvirtd + QEMU, checked with virsh and /proc."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import pytest

from ppec.agent.domxml import NS
from tests.realparts import Agent, Cli, domain_state, qemu_pid, unique, virsh, vm_files

TINY = ("--cpus", "1", "--memory", "64M", "--disk", "16M")


@pytest.fixture
def qcli(cli: Cli, qemu_agent: Agent) -> Cli:
    cli.ok("host", "add", "q", "--address", "local", "--socket", str(qemu_agent.socket))
    return cli


def test_create_runs_a_real_qemu_and_delete_removes_everything(qcli: Cli,
                                                               qemu_agent: Agent) -> None:
    name = unique("vm")
    vm = json.loads(qcli.ok("vm", "create", name, *TINY, "-o", "json").stdout)
    assert vm["state"] == "running"
    assert domain_state(name) == "running"
    pid = qemu_pid(name)
    assert pid is not None, "no qemu-system process for the domain"
    root = ET.fromstring(virsh("dumpxml", name))
    assert root.find(f"metadata/{{{NS}}}vm/{{{NS}}}host").text == qemu_agent.host  # type: ignore[union-attr]
    disk = root.find("devices/disk/source").get("file")  # type: ignore[union-attr]
    assert disk == str(qemu_agent.storage / f"{name}.qcow2")
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", disk],
                                     capture_output=True, text=True, check=True).stdout)
    assert (info["format"], info["virtual-size"]) == ("qcow2", 16 << 20)

    qcli.ok("vm", "delete", name)
    assert domain_state(name) is None
    assert qemu_pid(name) is None
    assert qemu_agent.volumes() == set()
    assert qemu_agent.ledger_rows() == {}
    assert qcli.store_vms() == []


def test_stop_without_a_guest_os_times_out_cleanly_then_force_works(qcli: Cli) -> None:
    name = unique("vm")
    qcli.ok("vm", "create", name, *TINY)
    done = qcli.run("vm", "stop", name, "--timeout", "2")
    assert done.returncode == 1
    assert "did not shut down within 2s" in done.stderr and "--force" in done.stderr
    assert domain_state(name) == "running"
    qcli.ok("vm", "stop", name, "--force")
    assert domain_state(name) == "shut off"
    qcli.ok("vm", "start", name)
    assert domain_state(name) == "running"
    qcli.ok("vm", "delete", name)


def test_sigkill_of_the_agent_leaves_vms_running_and_a_new_agent_sees_them(
        qcli: Cli, qemu_agent: Agent) -> None:
    names = [unique("vm") for _ in range(2)]
    for n in names:
        qcli.ok("vm", "create", n, *TINY)
    qcli.ok("vm", "stop", names[1], "--force")
    pids = {n: qemu_pid(n) for n in names}
    before = json.loads(qcli.ok("vm", "list", "-o", "json").stdout)["vms"]

    qemu_agent.kill(signal.SIGKILL)
    assert domain_state(names[0]) == "running"
    assert qemu_pid(names[0]) == pids[names[0]]
    down = qcli.run("vm", "list")
    assert down.returncode == 1 and "agent not running" in down.stderr

    qemu_agent.start()
    after = json.loads(qcli.ok("vm", "list", "-o", "json").stdout)["vms"]
    assert [(v["name"], v["state"]) for v in after] == [(v["name"], v["state"])
                                                        for v in before]
    assert {v["name"]: v["state"] for v in after} == {names[0]: "running",
                                                      names[1]: "shut-off"}
    assert qemu_pid(names[0]) == pids[names[0]]
    for n in names:
        qcli.ok("vm", "delete", n)


def test_libvirt_failing_mid_create_removes_the_disk(cli: Cli, qemu_dir: object) -> None:
    """A QEMU binary that does not exist: the disk is made, define fails, all is undone."""
    from pathlib import Path
    agent = Agent(Path(str(qemu_dir)) / "broken", host=unique("q"),
                  libvirt_uri="qemu:///system",
                  extra={"emulator": "/nonexistent/qemu-system-x86_64"}).start()
    try:
        cli.ok("host", "add", "q", "--address", "local", "--socket", str(agent.socket))
        name = unique("vm")
        done = cli.run("vm", "create", name, *TINY)
        assert done.returncode == 1, done.stderr
        assert f"create {name} failed at step 'define domain'" in done.stderr
        assert "/nonexistent/qemu-system-x86_64" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert domain_state(name) is None
        assert agent.volumes() == set()
        assert agent.ledger_rows() == {}
        assert cli.store_vms() == []
        assert f"create {name} failed at define domain" in agent.log()
    finally:
        agent.kill()


def test_twenty_concurrent_creates_share_no_disk_or_name(qcli: Cli, qemu_agent: Agent) -> None:
    names = [unique(f"c{i:02d}") for i in range(20)]

    def create(n: str) -> subprocess.CompletedProcess[str]:
        return qcli.run("vm", "create", n, *TINY, "-o", "json")

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(create, names))
    for n, r in zip(names, results, strict=True):
        assert r.returncode == 0, (n, r.stderr)
    disks = {}
    for n in names:
        assert domain_state(n) == "running"
        blk = virsh("domblklist", n).split()
        disks[n] = [p for p in blk if p.startswith("/")]
    all_paths = [p for paths in disks.values() for p in paths]
    # A root disk and a seed ISO each, none shared.
    assert len(all_paths) == len(set(all_paths)) == 40
    assert len({qemu_pid(n) for n in names}) == 20
    # The ledger (read with sqlite3) matches libvirt (read with virsh).
    ledger = qemu_agent.ledger_rows()
    assert ledger == {n: ("present", disks[n][0]) for n in names}
    assert qemu_agent.volumes() == vm_files(*names)
    for n in names:
        qcli.ok("vm", "delete", n)
    assert qemu_agent.ledger_rows() == {} and qemu_agent.volumes() == set()


def test_agent_restart_finishes_or_undoes_what_a_crash_interrupted(qcli: Cli,
                                                                   qemu_agent: Agent) -> None:
    """Rows a crash left in 'creating' (disk, no domain) and 'deleting' (domain still there)."""
    kept, half_made = unique("vm"), unique("vm")
    qcli.ok("vm", "create", kept, *TINY)
    qemu_agent.kill(signal.SIGKILL)
    orphan = qemu_agent.storage / f"{half_made}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(orphan), "16M"], check=True)
    with contextlib.closing(sqlite3.connect(qemu_agent.ledger)) as db, db:
        db.execute("INSERT INTO vms (name, uuid, state, vcpus, memory_mib, disk_path, "
                   "disk_bytes, image, power, created_at, updated_at) VALUES "
                   "(?, 'u-1', 'creating', 1, 64, ?, 16777216, '', 'running', 'x', 'x')",
                   (half_made, str(orphan)))
        db.execute("UPDATE vms SET state='deleting' WHERE name=?", (kept,))
    qemu_agent.start()
    assert qemu_agent.ledger_rows() == {}
    assert qemu_agent.volumes() == set()
    assert domain_state(kept) is None
    log = qemu_agent.log()
    assert f"{half_made}: interrupted create undone" in log
    assert f"{kept}: interrupted delete finished" in log
    # The operator store still lists `kept`; a delete reconciles it.
    done = qcli.ok("vm", "delete", kept)
    assert f"{kept} was already gone from q; store record removed" in done.stdout
    assert qcli.store_vms() == []


def test_foreign_domains_are_listed_as_foreign_and_never_touched(qcli: Cli,
                                                                 qemu_agent: Agent) -> None:
    name = unique("foreign")
    xml = (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>"
           f"<os><type arch='x86_64'>hvm</type></os></domain>")
    path = qemu_agent.root / "foreign.xml"
    path.write_text(xml)
    virsh("define", str(path))
    try:
        done = qcli.run("vm", "delete", name, "--host", "q")
        assert done.returncode == 1
        assert "was not created by this host's ppec agent; refusing" in done.stderr
        assert domain_state(name) == "shut off"
        vms = json.loads(qcli.ok("vm", "list", "-o", "json").stdout)["vms"]
        assert name not in [v["name"] for v in vms]
    finally:
        virsh("undefine", name)
