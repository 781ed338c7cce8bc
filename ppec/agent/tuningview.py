"""What the host actually applied to one VM (`ppec vm show --tuning`): the live XML's
pins, I/O thread and disk modes, and what /proc says of the running QEMU: each thread's
allowed CPUs (vCPUs, the emulator, the I/O thread, the kernel's vhost workers) and how
the guest's RAM is backed and on which NUMA nodes it sits."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

PID_DIR = Path("/run/libvirt/qemu")   # libvirt's system driver: <name>.pid per domain
_NODE = re.compile(r"\bN(\d+)=(\d+)")


def _role(comm: str, main: bool) -> str:
    if main:
        return "emulator"
    if comm.startswith("CPU ") and "/" in comm:   # "CPU 0/KVM", "CPU 1/TCG"
        return "vcpu"
    if comm.startswith("IO iothread"):
        return "iothread"
    if comm.startswith("IO ") or comm.startswith("worker"):
        return "io-worker"
    return "other"


def _allowed(status: str) -> str:
    return next((ln.split(":", 1)[1].strip() for ln in status.splitlines()
                 if ln.startswith("Cpus_allowed_list")), "")


def threads(pid: int, proc: Path = Path("/proc")) -> list[dict[str, str]]:
    """QEMU's threads (named by libvirt's debug-threads) and the kernel's vhost workers
    for this QEMU, each with its Cpus_allowed_list."""
    out = []
    for task in sorted((proc / str(pid) / "task").iterdir(), key=lambda p: int(p.name)):
        try:
            comm = (task / "comm").read_text().strip()
            allowed = _allowed((task / "status").read_text())
        except OSError:
            continue   # a thread that ended while we read
        out.append({"tid": task.name, "name": comm,
                    "role": _role(comm, task.name == str(pid)), "cpus": allowed})
    for p in proc.iterdir():
        if p.name.isdigit():
            try:
                comm = (p / "comm").read_text().strip()
                if comm == f"vhost-{pid}":
                    out.append({"tid": p.name, "name": comm, "role": "vhost",
                                "cpus": _allowed((p / "status").read_text())})
            except OSError:
                continue
    return out


def memory(pid: int, memory_kib: int, proc: Path = Path("/proc")) -> dict[str, Any]:
    """The guest RAM's mapping (the largest one at least the guest's size): its backing
    and pages per NUMA node, from numa_maps."""
    best: tuple[int, str] | None = None
    for line in (proc / str(pid) / "numa_maps").read_text().splitlines():
        kib = sum(int(n) for _, n in _NODE.findall(line)) * _kernelpage(line)
        if best is None or kib > best[0]:
            best = (kib, line)
    if best is None:
        return {"backing": "unknown", "nodes": {}}
    kib, line = best
    page = _kernelpage(line)
    return {"backing": "hugetlbfs" if "huge" in line or page > 4 else "anonymous",
            "page_kib": page, "resident_kib": kib, "guest_kib": memory_kib,
            "nodes": {f"N{n}": int(c) * page for n, c in _NODE.findall(line)},
            "policy": line.split()[1] if len(line.split()) > 1 else ""}


def _kernelpage(line: str) -> int:
    m = re.search(r"kernelpagesize_kB=(\d+)", line)
    return int(m.group(1)) if m else 4


def from_xml(root: ET.Element) -> dict[str, Any]:
    tune = root.find("cputune")
    pins: dict[str, Any] = {"vcpus": {}, "emulator": "", "iothread": ""}
    if tune is not None:
        pins["vcpus"] = {p.get("vcpu", ""): p.get("cpuset", "") for p in tune.findall("vcpupin")}
        emu, io = tune.find("emulatorpin"), tune.find("iothreadpin")
        pins["emulator"] = emu.get("cpuset", "") if emu is not None else ""
        pins["iothread"] = io.get("cpuset", "") if io is not None else ""
    disks = []
    for d in root.findall("devices/disk"):
        drv, tgt = d.find("driver"), d.find("target")
        if d.get("device") != "disk" or drv is None or tgt is None:
            continue
        disks.append({"target": tgt.get("dev", ""), "cache": drv.get("cache", "default"),
                      "io": drv.get("io", "default"), "discard": drv.get("discard", "ignore"),
                      "iothread": drv.get("iothread", "")})
    nodeset = root.find("numatune/memory")
    return {"iothreads": int(root.findtext("iothreads") or 0), "pins": pins, "disks": disks,
            "memory_nodeset": nodeset.get("nodeset", "") if nodeset is not None else "",
            "hugepages": root.find("memoryBacking/hugepages") is not None}


def view(name: str, xml: str, memory_kib: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"vm": name, "xml": from_xml(ET.fromstring(xml)), "pid": None,
                           "threads": [], "memory": None}
    try:
        pid = int((PID_DIR / f"{name}.pid").read_text().strip())
        doc["threads"] = threads(pid)
        doc["memory"] = memory(pid, memory_kib)
        doc["pid"] = pid
    except (OSError, ValueError):
        doc["note"] = "no QEMU process to read (not running, or not libvirt's QEMU driver)"
    return doc
