"""Disk tuning on real libvirtd + QEMU, checked from the host's page cache and /proc.

A guest that really boots writes 256 MiB to a hot-plugged data disk: with cache='none'
(O_DIRECT) the host's page cache holds next to nothing of that file afterwards (fincore,
util-linux), with writeback it holds most of it. Every VM has one I/O thread; a dedicated
VM's runs where its emulator thread runs. A storage dir that refuses O_DIRECT (ramfs:
tmpfs accepts it since Linux 6.6) falls back to writeback and says so."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realparts import Agent, Cli, guest_fill, page_cached, qemu_pid, unique, virsh


def drivers(name: str) -> dict[str, dict[str, str]]:
    root = ET.fromstring(virsh("dumpxml", name))
    return {d.find("target").get("dev"): dict(d.find("driver").attrib)   # type: ignore[union-attr]
            for d in root.findall("devices/disk") if d.get("device") == "disk"}


def _agent(qemu_dir: Path, guest: Path, tag: str, **extra: object) -> Agent:
    return Agent(qemu_dir / tag, host=unique(tag), libvirt_uri="qemu:///system",
                 extra={"cpu_overcommit": 12.0, "image_dir": str(guest),
                        "domain_type": "qemu", **extra}).start()


def _fill(cli: Cli, agent: Agent, guest: Path, mib: int) -> tuple[str, int]:
    """The guest's write of ``mib`` MiB to a hot-plugged vdb: the VM and how much of the
    disk's file the host caches afterwards."""
    cli.ok("host", "add", agent.host, "--address", "local", "--socket", str(agent.socket))
    vm, path, _ = guest_fill(cli, agent, guest, mib)
    return vm, page_cached(path)


@pytest.fixture
def two_agents(qemu_dir: Path, guest: Path) -> Iterator[tuple[Agent, Agent]]:
    direct = _agent(qemu_dir, guest, "none")
    cached = _agent(qemu_dir, guest, "wb", disk_cache="writeback")
    yield direct, cached
    direct.kill()
    cached.kill()


def test_cache_none_keeps_a_guests_writes_out_of_the_host_page_cache(
        cli: Cli, two_agents: tuple[Agent, Agent], guest: Path) -> None:
    direct, cached = two_agents
    vm, none_bytes = _fill(cli, direct, guest, 256)
    assert drivers(vm)["vdb"] == {"name": "qemu", "type": "qcow2", "cache": "none",
                                  "io": "native", "discard": "unmap", "iothread": "1"}
    assert drivers(vm)["vda"]["cache"] == "none"
    assert "disks: cache=none io=native" in direct.log()

    vm2, wb_bytes = _fill(cli, cached, guest, 256)
    assert drivers(vm2)["vdb"]["cache"] == "writeback"
    assert drivers(vm2)["vdb"]["io"] == "threads"
    assert none_bytes < 32 << 20, f"cache=none left {none_bytes >> 20} MiB cached"
    assert wb_bytes > 128 << 20, f"writeback cached only {wb_bytes >> 20} MiB"


def _threads(pid: int) -> dict[str, str]:
    """Thread name -> Cpus_allowed_list, from /proc (QEMU names them: debug-threads)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        name = (task / "comm").read_text().strip()
        status = (task / "status").read_text()
        allowed = next(ln.split(":", 1)[1].strip() for ln in status.splitlines()
                       if ln.startswith("Cpus_allowed_list"))
        out[name if task.name != str(pid) else "main"] = allowed
    return out


def test_a_dedicated_vm_has_its_io_thread_beside_its_emulator(
        cli: Cli, qemu_dir: Path, guest: Path) -> None:
    agent = _agent(qemu_dir, guest, "ded")
    try:
        cli.ok("host", "add", agent.host, "--address", "local", "--socket",
               str(agent.socket))
        vm = unique("ded")
        cli.ok("vm", "create", vm, "--cpus", "1", "--memory", "64M", "--disk", "16M",
               "--numa", "dedicated")
        root = ET.fromstring(virsh("dumpxml", vm))
        assert root.findtext("iothreads") == "1"
        emulator = root.find("cputune/emulatorpin").get("cpuset")   # type: ignore[union-attr]
        pin = root.find("cputune/iothreadpin")
        assert pin is not None and pin.get("cpuset") == emulator
        pid = qemu_pid(vm)
        assert pid is not None
        threads = _threads(pid)
        io = [v for k, v in threads.items() if k.startswith("IO iothread")]
        assert io == [threads["main"]], threads   # the emulator's CPUs, read from /proc

        # vm show --tuning reports what /proc shows
        shown = json.loads(cli.ok("vm", "show", vm, "--tuning", "-o", "json").stdout)
        t = shown["tuning"]
        assert t["pid"] == pid and t["xml"]["iothreads"] == 1
        by_role = {r["role"]: r["cpus"] for r in t["threads"] if r["role"] != "other"}
        assert by_role["iothread"] == threads["main"] == by_role["emulator"]
        assert by_role["vcpu"] == next(v for k, v in threads.items() if k.startswith("CPU "))
        assert t["memory"]["backing"] == "anonymous" and t["memory"]["nodes"]
        assert [d["cache"] for d in t["xml"]["disks"]] == ["none"]

        # the I/O thread moved behind ppec's back: a drift alert
        other = "1" if emulator == "0" else "0"
        virsh("iothreadpin", vm, "1", other, "--live")
        done = cli.run("alerts", "-o", "json")
        assert done.returncode in (0, 10), done.stderr
        alerts = [a for a in json.loads(done.stdout)["alerts"] if a["object"] == vm]
        assert any(a["code"] == "PINNING_CHANGED" and "I/O thread" in a["detail"]
                   for a in alerts), alerts
        cli.ok("vm", "delete", vm)
    finally:
        agent.kill()


@pytest.fixture
def ramfs(qemu_dir: Path) -> Iterator[Path]:
    where = qemu_dir / "ramfs"
    where.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(where)], check=True)
    where.chmod(0o711)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_storage_without_o_direct_falls_back_to_writeback_and_says_so(
        cli: Cli, qemu_dir: Path, guest: Path, ramfs: Path) -> None:
    agent = _agent(qemu_dir, guest, "ram", storage_dir=str(ramfs / "disks"))
    try:
        assert "disks: cache=writeback io=threads" in agent.log()
        assert "refuses O_DIRECT" in agent.log()
        cli.ok("host", "add", agent.host, "--address", "local", "--socket",
               str(agent.socket))
        shown = json.loads(cli.ok("host", "show", agent.host, "-o", "json").stdout)
        assert shown["live"]["disk_tuning"]["cache"] == "writeback"
        assert "O_DIRECT" in shown["live"]["disk_tuning"]["why"]
        # The domain XML of that choice: the writeback agent in the test above. A VM is not
        # built here: ramfs reports no size, and both placement and the agent refuse a
        # disk on 0 bytes free (NO_SPACE), which is right for a filesystem of unknown size.
    finally:
        agent.kill()


def test_the_probe_and_the_choice(ramfs: Path, qemu_dir: Path) -> None:
    from ppec.agent import tuning
    assert "refuses O_DIRECT" in tuning.direct_io_refused(ramfs)
    assert tuning.direct_io_refused(qemu_dir) == ""
    assert (tuning.choose("auto", ramfs).cache, tuning.choose("auto", ramfs).io) == \
        ("writeback", "threads")
    assert tuning.choose("auto", qemu_dir).cache == "none"
    assert tuning.choose("writeback", qemu_dir).cache == "writeback"
    with pytest.raises(OSError, match="disk_cache = none"):
        tuning.choose("none", ramfs)
    assert list(ramfs.iterdir()) == []   # the probe leaves nothing behind
