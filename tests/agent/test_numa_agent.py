"""NUMA pinning through the agent: real QEMU checked with virsh and /proc; concurrency on
libvirt's test driver (2 cells x 8 CPUs), checked against each domain's live XML."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ppec.agent.domxml import live_pins
from tests.realparts import Agent, Cli, qemu_pid, unique, virsh

TINY = ("--memory", "64M", "--disk", "16M")


def ledger_cpus(agent: Agent) -> dict[str, set[int]]:
    with contextlib.closing(sqlite3.connect(agent.ledger)) as db:
        out: dict[str, set[int]] = {}
        for vm, cpu in db.execute("SELECT vm, cpu FROM vm_cpus"):
            out.setdefault(vm, set()).add(cpu)
        return out


def vcpu_threads(name: str) -> dict[int, str]:
    """vCPU index -> Cpus_allowed_list of QEMU's vCPU thread, straight from /proc."""
    pid = qemu_pid(name)
    assert pid is not None
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        m = re.fullmatch(r"CPU (\d+)/KVM|CPU (\d+)/TCG", (task / "comm").read_text().strip())
        if m:
            status = (task / "status").read_text()
            allowed = re.search(r"Cpus_allowed_list:\s*(\S+)", status)
            assert allowed is not None
            out[int(m.group(1) or m.group(2))] = allowed.group(1)
    return out


def virsh_pins(name: str) -> dict[int, str]:
    rows = virsh("vcpupin", name).splitlines()[2:]
    return {int(r.split()[0]): r.split()[1] for r in rows if r.strip()}


@pytest.fixture
def qemu_numa(cli: Cli, qemu_dir: Path) -> Agent:
    agent = Agent(qemu_dir / "numa", host=unique("q"), libvirt_uri="qemu:///system",
                  extra={"reserved_cpus": "0"}).start()
    cli.ok("host", "add", "q", "--address", "local", "--socket", str(agent.socket))
    yield agent  # type: ignore[misc]
    agent.kill()


def test_dedicated_vcpus_are_pinned_as_planned_on_real_qemu(cli: Cli, qemu_numa: Agent) -> None:
    name = unique("pin")
    cli.ok("vm", "create", name, "--cpus", "1", *TINY, "--numa", "dedicated")
    # CPU 0 is reserved for the host: the only CPU left on this machine's node 0 is 1.
    assert virsh_pins(name) == {0: "1"}
    assert vcpu_threads(name) == {0: "1"}
    numatune = virsh("numatune", name)
    assert re.search(r"numa_mode\s*:\s*strict", numatune)
    assert re.search(r"numa_nodeset\s*:\s*0\b", numatune)
    assert "*: 1" in virsh("emulatorpin", name)
    assert ledger_cpus(qemu_numa) == {name: {1}}
    numa = json.loads(cli.ok("host", "show", "q", "--numa", "-o", "json").stdout)
    node0 = numa["nodes"][0]
    assert (node0["reserved"], node0["dedicated"], node0["vms"]) == (1, 1, [name])
    # Nothing is left for a second dedicated VM: the agent says why, and builds nothing.
    done = cli.run("vm", "create", unique("pin"), "--cpus", "1", *TINY, "--numa", "dedicated",
                   "--host", "q")
    assert done.returncode == 3
    assert "q: 0 CPUs not dedicated, needs 1" in done.stderr
    cli.ok("vm", "delete", name)
    assert ledger_cpus(qemu_numa) == {}


def test_shared_vms_move_off_cpus_a_dedicated_vm_takes(cli: Cli, qemu_dir: Path) -> None:
    agent = Agent(qemu_dir / "mix", host=unique("q"), libvirt_uri="qemu:///system").start()
    try:
        cli.ok("host", "add", "m", "--address", "local", "--socket", str(agent.socket))
        shared, dedicated = unique("sh"), unique("ded")
        cli.ok("vm", "create", shared, "--cpus", "1", *TINY)
        assert virsh_pins(shared) == {0: "0-1"}
        cli.ok("vm", "create", dedicated, "--cpus", "1", *TINY, "--numa", "dedicated")
        pinned = virsh_pins(dedicated)[0]
        other = {"0": "1", "1": "0"}[pinned]
        assert virsh_pins(shared) == {0: other}
        assert vcpu_threads(shared) == {0: other}
        cli.ok("vm", "delete", dedicated)
        assert virsh_pins(shared) == {0: "0-1"}   # the freed CPU is shared again
        cli.ok("vm", "delete", shared)
    finally:
        agent.kill()


def test_restart_rebuilds_holdings_from_the_live_xml(cli: Cli, qemu_dir: Path) -> None:
    agent = Agent(qemu_dir / "rb", host=unique("q"), libvirt_uri="qemu:///system").start()
    try:
        cli.ok("host", "add", "r", "--address", "local", "--socket", str(agent.socket))
        name = unique("rb")
        cli.ok("vm", "create", name, "--cpus", "1", *TINY, "--numa", "dedicated")
        planned = int(virsh_pins(name)[0])
        agent.kill(signal.SIGKILL)
        moved = 1 - planned
        virsh("vcpupin", name, "0", str(moved), "--live", "--config")
        virsh("emulatorpin", name, str(moved), "--live", "--config")
        agent.start()
        assert ledger_cpus(agent) == {name: {moved}}
        assert "the live XML wins" in agent.log()
        numa = json.loads(cli.ok("host", "show", "r", "--numa", "-o", "json").stdout)
        assert numa["nodes"][0]["free_cpus"] == str(planned)
        cli.ok("vm", "delete", name)
    finally:
        agent.kill()


@pytest.fixture
def numa_test_host(cli: Cli, tmp_path: Path) -> Agent:
    agent = Agent(tmp_path / "t", host="t2", libvirt_uri="test:///default").start()
    cli.ok("host", "add", "t2", "--address", "local", "--socket", str(agent.socket))
    yield agent  # type: ignore[misc]
    agent.kill()


def _live_pins(cli: Cli, names: list[str]) -> dict[str, set[int]]:
    pins = {}
    for n in names:
        xml = json.loads(cli.ok("vm", "show", n, "--xml", "-o", "json").stdout)["xml"]
        live = live_pins(ET.fromstring(xml))
        pins[n] = set(live.vcpu_pins) | set(live.emulator_cpus)
    return pins


def test_thirty_concurrent_dedicated_creates_never_share_a_cpu(cli: Cli,
                                                              numa_test_host: Agent) -> None:
    names = [f"c{i:02d}" for i in range(30)]
    sizes = {n: 1 + i % 3 for i, n in enumerate(names)}

    def create(n: str) -> subprocess.CompletedProcess[str]:
        return cli.run("vm", "create", n, "--cpus", str(sizes[n]), "--memory", "64M",
                       "--disk", "16M", "--numa", "dedicated", "-o", "json")

    with ThreadPoolExecutor(max_workers=30) as pool:
        results = dict(zip(names, pool.map(create, names), strict=True))
    made = sorted(n for n, r in results.items() if r.returncode == 0)
    refused = {n: r for n, r in results.items() if r.returncode != 0}
    # Refused by placement (from the snapshot) or by the agent (under its lock): both
    # exit 3 with the CPU numbers.
    assert all(r.returncode == 3 and ("free CPUs" in r.stderr
                                      or "CPUs not dedicated" in r.stderr)
               for r in refused.values()), {n: r.stderr for n, r in refused.items()}
    used = sum(sizes[n] for n in made)
    # Free CPUs only shrink, and with splits allowed a VM fits while enough CPUs are free:
    # every refusal was for more vCPUs than are free even now.
    assert used <= 16 and all(sizes[n] > 16 - used for n in refused), (used, sorted(refused))
    live = _live_pins(cli, made)
    seen: set[int] = set()
    for n in made:
        assert len(live[n]) == sizes[n]
        assert not live[n] & seen, f"{n} shares a CPU"
        seen |= live[n]
    assert ledger_cpus(numa_test_host) == live      # the ledger equals the live XML
    assert cli.store_vms() == made


def test_delete_frees_exactly_its_cores(cli: Cli, numa_test_host: Agent) -> None:
    for n in ("a", "b"):
        cli.ok("vm", "create", n, "--cpus", "4", *TINY, "--numa", "dedicated")
    before = ledger_cpus(numa_test_host)
    assert len(before["a"] | before["b"]) == 8
    cli.ok("vm", "delete", "a")
    assert ledger_cpus(numa_test_host) == {"b": before["b"]}
    numa = json.loads(cli.ok("host", "show", "t2", "--numa", "-o", "json").stdout)
    assert sum(n["dedicated"] for n in numa["nodes"]) == 4
    cli.ok("vm", "create", "c", "--cpus", "4", *TINY, "--numa", "dedicated")
    assert ledger_cpus(numa_test_host)["c"] == before["a"]   # best fit: a's hole again
    table = cli.ok("host", "show", "t2", "--numa").stdout.splitlines()
    assert table[0].split() == ["NODE", "CPUS", "RESERVED", "DEDICATED", "FREE", "FREE",
                                "CPUS", "MEMORY", "FREE", "MEMORY", "HUGEPAGES",
                                "FREE/TOTAL", "VMS"]
