"""Huge pages per NUMA node as the agent reports them, against sysfs read by the test."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ppec.wire import protocol
from tests.realparts import Agent, Cli, qemu_pid, unique, virsh

SYSFS = Path("/sys/devices/system/node/node0/hugepages/hugepages-2048kB")


@contextlib.contextmanager
def reserved(extra: int) -> Iterator[int]:
    """``extra`` more 2 MiB pages reserved on node 0 (the total yielded), the old count
    restored after; a skip naming why where the kernel has or gives none."""
    nr = SYSFS / "nr_hugepages"
    if not nr.exists():
        pytest.skip("no 2 MiB huge pages on node 0 of this kernel")
    before = int(nr.read_text())
    try:
        nr.write_text(str(before + extra))
    except OSError as e:
        pytest.skip(f"cannot reserve huge pages here ({e})")
    try:
        yield int(nr.read_text())
    finally:
        nr.write_text(str(before))


@pytest.fixture
def eight_pages() -> Iterator[int]:
    with reserved(8) as total:
        yield total


def test_host_show_numa_reports_sysfs_pages(cli: Cli, test_agent: Agent,
                                            eight_pages: int) -> None:
    cli.ok("host", "add", "t1", "--address", "local", "--socket", str(test_agent.socket))
    doc = json.loads(cli.ok("host", "show", "t1", "--numa", "-o", "json").stdout)
    node0 = next(n for n in doc["nodes"] if n["node"] == 0)
    two = next(h for h in node0["hugepages"] if h["size_kib"] == 2048)
    assert two == {"size_kib": 2048, "total": eight_pages,
                   "free": int((SYSFS / "free_hugepages").read_text())}
    table = cli.ok("host", "show", "t1", "--numa").stdout
    assert f"2M {two['free']}/{eight_pages}" in table, table


def fake_sysfs(root: Path, pages: dict[int, int]) -> Path:
    """A sysfs node tree with ``pages`` 2 MiB pages reserved per node (the test driver's
    cells are not this machine's nodes: the agent reads this instead, hugepages_sysfs)."""
    for node, count in pages.items():
        d = root / f"node{node}" / "hugepages" / "hugepages-2048kB"
        d.mkdir(parents=True)
        (d / "nr_hugepages").write_text(f"{count}\n")
        (d / "free_hugepages").write_text(f"{count}\n")
    return root


def _backing(agent: Agent, vm: str) -> tuple[str, str]:
    """(page size, host nodeset) of a test-driver domain, from the agent's own XML call."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(agent.socket))
        s.sendall(protocol.encode(protocol.request(1, "vm.xml", {"name": vm})))
        root = ET.fromstring(json.loads(s.makefile("rb").readline())["result"]["xml"])
    page = root.find("memoryBacking/hugepages/page")
    mem = root.find("numatune/memory")
    assert page is not None and mem is not None
    return page.get("size", ""), mem.get("nodeset", "")


@pytest.fixture
def page_agent(tmp_path: Path) -> Iterator[Agent]:
    """libvirt's default test host (two cells of 8 CPUs): no pages on node 0, 1024 2 MiB
    pages (2 GiB) on node 1."""
    sysfs = fake_sysfs(tmp_path / "sysfs", {0: 0, 1: 1024})
    agent = Agent(tmp_path / "agent", host="hp", libvirt_uri="test:///default",
                  extra={"hugepages_sysfs": str(sysfs)}).start()
    yield agent
    agent.kill()


def _create(cli: Cli, name: str, memory: str = "256M") -> subprocess.CompletedProcess[str]:
    return cli.run("vm", "create", name, "--cpus", "1", "--memory", memory, "--disk", "16M",
                   "--numa", "dedicated", "--hugepages", "2M", "-o", "json")


def test_pages_decide_the_node_and_twenty_at_once_never_overcommit(
        cli: Cli, page_agent: Agent) -> None:
    cli.ok("host", "add", "hp", "--address", "local", "--socket", str(page_agent.socket))
    with ThreadPoolExecutor(20) as pool:
        done = list(pool.map(lambda i: _create(cli, f"hp{i}"), range(20)))
    made = [f"hp{i}" for i, d in enumerate(done) if d.returncode == 0]
    assert len(made) == 8, [d.stderr[-300:] for d in done]   # 8 x 128 pages = 1024
    refused = [json.loads(d.stderr)["error"] for d in done if d.returncode != 0]
    assert all(e["code"] == "NO_CAPACITY" for e in refused), refused
    assert any("node 1 has 0 free 2M pages" in e["message"] and "needs 128" in e["message"]
               for e in refused), refused
    for vm in made:   # every one on node 1, backed by 2 MiB pages, per its live XML
        assert _backing(page_agent, vm) == ("2048", "1")
    with contextlib.closing(sqlite3.connect(page_agent.ledger)) as db:
        held = db.execute("SELECT cell, SUM(mib) FROM vm_memory GROUP BY cell").fetchall()
    assert held == [(1, 8 * 256)]

    # the ledger's count survives a restart: still full, and one delete makes room for one
    page_agent.kill()
    page_agent.start()
    again = _create(cli, "late")
    assert again.returncode == 3 and "node 1 has 0 free 2M pages" in again.stderr
    cli.ok("vm", "delete", made[0])
    cli.ok("vm", "create", "late", "--cpus", "1", "--memory", "256M", "--disk", "16M",
           "--numa", "dedicated", "--hugepages", "2M")
    assert _backing(page_agent, "late") == ("2048", "1")


def test_an_ordinary_vm_does_not_get_the_pages_memory(cli: Cli, tmp_path: Path) -> None:
    """Reserved pages are not ordinary memory: node 1's pool is off its free MiB."""
    sysfs = fake_sysfs(tmp_path / "sysfs", {0: 0, 1: 1024})
    agent = Agent(tmp_path / "agent", host="hp2", libvirt_uri="test:///default",
                  extra={"hugepages_sysfs": str(sysfs)})
    agent.start()
    try:
        cli.ok("host", "add", "hp2", "--address", "local", "--socket", str(agent.socket))
        numa = json.loads(cli.ok("host", "show", "hp2", "--numa", "-o", "json").stdout)
        mib = {n["node"]: n["memory_mib"] for n in numa["nodes"]}
        assert mib == {0: 2048, 1: 4096}   # libvirt's default test host
        # Node 1 holds 4096 MiB of which 2048 are reserved pages: 2050 MiB on one node fits
        # nowhere (it would on node 1 if the pool counted as ordinary memory) ...
        big = cli.run("vm", "create", "big", "--cpus", "1", "--memory", "2050M", "--disk",
                      "16M", "--numa", "dedicated", "--numa-nodes", "1", "--host", "hp2")
        assert big.returncode == 3 and "needs 2050 MiB" in big.stderr, big.stderr
        # ... and the pool is still whole for a hugepage VM beside an ordinary 2048 MiB one
        cli.ok("vm", "create", "plain", "--cpus", "1", "--memory", "2048M", "--disk", "16M",
               "--numa", "dedicated", "--numa-nodes", "1", "--host", "hp2")
        cli.ok("vm", "create", "paged", "--cpus", "1", "--memory", "2048M", "--disk", "16M",
               "--numa", "dedicated", "--hugepages", "2M", "--host", "hp2")
        assert _backing(agent, "paged") == ("2048", "1")
    finally:
        agent.kill()


def test_hugepages_need_a_dedicated_vm_and_whole_pages(cli: Cli, page_agent: Agent) -> None:
    cli.ok("host", "add", "hp", "--address", "local", "--socket", str(page_agent.socket))
    shared = cli.run("vm", "create", "s", "--cpus", "1", "--memory", "256M", "--disk", "16M",
                     "--hugepages", "2M")
    assert shared.returncode == 2 and "needs --numa dedicated" in shared.stderr
    odd = _create(cli, "odd", memory="255M")
    assert odd.returncode == 2 and "whole number of 2 MiB pages" in odd.stderr
    bad = _create(cli, "bad").args
    size = cli.run(*[a if a != "2M" else "4M" for a in bad[1:]])
    assert size.returncode == 2 and "use 2M or 1G" in size.stderr


def _hugetlbfs() -> bool:
    return any(line.split()[2] == "hugetlbfs" for line in
               Path("/proc/mounts").read_text().splitlines() if len(line.split()) > 2)


@pytest.fixture
def pages64(qemu_ready: None) -> Iterator[int]:
    """64 free 2 MiB pages on node 0 (128 MiB) for the test, the old count restored."""
    if not _hugetlbfs():
        pytest.skip("no hugetlbfs mounted (scripts/setup.sh mounts /dev/hugepages)")
    with reserved(64):
        if int((SYSFS / "free_hugepages").read_text()) < 64:
            pytest.skip("the kernel could not reserve 64 free 2 MiB pages on node 0")
        yield 64


def _huge_mapping(pid: int) -> tuple[int, int]:
    """(page KiB, resident KiB) of the QEMU process's largest hugetlbfs mapping."""
    best = (0, 0)
    for line in Path(f"/proc/{pid}/numa_maps").read_text().splitlines():
        if " huge " not in f" {line} ":
            continue
        page = int(line.split("kernelpagesize_kB=")[1].split()[0])
        pages = sum(int(w.split("=")[1]) for w in line.split()
                    if w.startswith("N") and "=" in w)
        best = max(best, (page, pages * page), key=lambda b: b[1])
    return best


def test_a_real_vm_runs_on_huge_pages_and_the_next_is_refused_with_numbers(
        cli: Cli, qemu_dir: Path, pages64: int) -> None:
    agent = Agent(qemu_dir / "hp", host=unique("hp"), libvirt_uri="qemu:///system",
                  extra={"domain_type": "qemu"}).start()
    try:
        cli.ok("host", "add", agent.host, "--address", "local", "--socket",
               str(agent.socket))
        free = int((SYSFS / "free_hugepages").read_text())
        vm = unique("huge")
        cli.ok("vm", "create", vm, "--cpus", "1", "--memory", "64M", "--disk", "16M",
               "--numa", "dedicated", "--hugepages", "2M")
        pid = qemu_pid(vm)
        assert pid is not None
        page, resident = _huge_mapping(pid)
        assert page == 2048 and resident >= 64 << 10   # from /proc, not from ppec
        taken = free - int((SYSFS / "free_hugepages").read_text())
        assert taken == 32, f"{taken} pages taken"
        shown = json.loads(cli.ok("vm", "show", vm, "--tuning", "-o", "json").stdout)
        assert shown["tuning"]["memory"]["backing"] == "hugetlbfs"
        assert shown["tuning"]["xml"]["hugepages"] is True

        # 48 pages asked, 32 left (the agent counts its ledger, under its lock)
        more = cli.run("vm", "create", unique("more"), "--cpus", "1", "--memory", "96M",
                       "--disk", "16M", "--numa", "dedicated", "--hugepages", "2M")
        assert more.returncode == 3, more.stderr
        assert "node 0 has 32 free 2M pages" in more.stderr and "needs 48" in more.stderr

        # the saved config loses its huge pages behind ppec's back: an alert says so
        saved = ET.fromstring(virsh("dumpxml", "--inactive", vm))
        backing = saved.find("memoryBacking")
        assert backing is not None
        saved.remove(backing)
        edited = qemu_dir / "edited.xml"
        edited.write_text(ET.tostring(saved, encoding="unicode"))
        virsh("define", str(edited))
        done = cli.run("alerts", "-o", "json")
        assert done.returncode == 10, done.stderr
        codes = {(a["code"], a["detail"]) for a in json.loads(done.stdout)["alerts"]
                 if a["object"] == vm}
        assert ("MEMORY_BACKING_CHANGED", "config: huge pages none KiB, ppec built 2048")\
            in codes, codes
        cli.ok("vm", "delete", vm)
        assert int((SYSFS / "free_hugepages").read_text()) == free
    finally:
        agent.kill()
