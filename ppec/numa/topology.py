"""Host NUMA topology from libvirt capabilities XML, or from sysfs as a second source."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path


@dataclass(frozen=True)
class Cpu:
    id: int
    socket: int
    core: int
    siblings: frozenset[int]   # the hardware threads of this CPU's core, itself included


@dataclass(frozen=True)
class Cell:
    id: int
    memory_mib: int
    cpus: tuple[Cpu, ...]
    hugepages: tuple[tuple[int, int], ...] = ()   # (page size KiB, pages), huge sizes only


@dataclass(frozen=True)
class Topology:
    cells: tuple[Cell, ...]
    reserved: frozenset[int] = field(default_factory=frozenset)   # never given to VMs

    def cell(self, cell_id: int) -> Cell:
        for c in self.cells:
            if c.id == cell_id:
                return c
        raise KeyError(cell_id)

    def usable(self, cell: Cell) -> tuple[Cpu, ...]:
        return tuple(c for c in cell.cpus if c.id not in self.reserved)

    @cached_property
    def cell_ids(self) -> tuple[int, ...]:
        """The cells' ids, in order (kept: a fleet's hosts share few Topology objects)."""
        return tuple(c.id for c in self.cells)

    @property
    def cpu_ids(self) -> frozenset[int]:
        return frozenset(c.id for cell in self.cells for c in cell.cpus)

    def cell_of(self, cpu: int) -> int:
        for cell in self.cells:
            if any(c.id == cpu for c in cell.cpus):
                return cell.id
        raise KeyError(cpu)



def parse_cpulist(text: str) -> frozenset[int]:
    """The cpulist syntax of the kernel and libvirt: ``0-3,8,10-11``, ``0-7,^3``.

    Raises ValueError on anything else (a reversed range, a negative number, a word).
    """
    out: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part.startswith("^"):
            out.discard(int(part[1:]))
            continue
        lo, sep, hi = part.partition("-")
        first, last = int(lo), int(hi) if sep else int(lo)
        if first < 0 or last < first:
            raise ValueError(f"invalid CPU range {part!r}")
        out.update(range(first, last + 1))
    return frozenset(out)


def format_cpulist(cpus: Iterable[int]) -> str:
    """{0, 1, 2, 5} -> ``0-2,5``."""
    ids = sorted(set(cpus))
    runs: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        runs.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(runs)


def from_capabilities(xml: str, reserved: frozenset[int] = frozenset()) -> Topology:
    """Parse ``<host><topology><cells>`` of ``virsh capabilities``.

    A host whose capabilities list no cells (some drivers, some VMs) has no topology here;
    use ``single_node`` with the node's CPU count and memory instead.
    """
    root = ET.fromstring(xml)
    cells = []
    for cell in root.findall("host/topology/cells/cell"):
        mem = cell.find("memory")
        kib = int(mem.text or 0) if mem is not None else 0
        if mem is not None and mem.get("unit", "KiB") != "KiB":
            raise ValueError(f"unexpected memory unit {mem.get('unit')!r}")
        cpus = []
        for cpu in cell.findall("cpus/cpu"):
            cid = int(cpu.get("id", "-1"))
            cpus.append(Cpu(id=cid, socket=int(cpu.get("socket_id", "0")),
                            core=int(cpu.get("core_id", str(cid))),
                            siblings=parse_cpulist(cpu.get("siblings", str(cid)))))
        pages = tuple((int(p.get("size", "0")), int(p.text or 0))
                      for p in cell.findall("pages") if int(p.get("size", "0")) > 4)
        cells.append(Cell(id=int(cell.get("id", "0")), memory_mib=kib // 1024,
                          cpus=tuple(sorted(cpus, key=lambda c: c.id)), hugepages=pages))
    return Topology(tuple(sorted(cells, key=lambda c: c.id)), reserved)


def single_node(cpus: int, memory_mib: int, reserved: frozenset[int] = frozenset()) -> Topology:
    """One cell holding every CPU, no SMT: for hosts that report no NUMA cells."""
    return Topology((Cell(0, memory_mib, tuple(Cpu(i, 0, i, frozenset({i}))
                                               for i in range(cpus))),), reserved)


def from_sysfs(root: Path = Path("/sys/devices/system"),
               reserved: frozenset[int] = frozenset()) -> Topology:
    """Read /sys/devices/system/node and .../cpu: the kernel's own view, no libvirt."""
    cells = []
    for node in sorted((root / "node").glob("node[0-9]*"), key=lambda p: int(p.name[4:])):
        cpu_ids = parse_cpulist((node / "cpulist").read_text())
        meminfo = (node / "meminfo").read_text()
        m = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
        cpus = []
        for cid in sorted(cpu_ids):
            topo = root / "cpu" / f"cpu{cid}" / "topology"
            cpus.append(Cpu(id=cid, socket=int((topo / "physical_package_id").read_text()),
                            core=int((topo / "core_id").read_text()),
                            siblings=parse_cpulist((topo / "thread_siblings_list").read_text())))
        pages = []
        for hp in sorted((node / "hugepages").glob("hugepages-*kB")):
            size = int(hp.name.split("-")[1][:-2])
            pages.append((size, int((hp / "nr_hugepages").read_text())))
        cells.append(Cell(id=int(node.name[4:]), memory_mib=int(m.group(1)) // 1024 if m else 0,
                          cpus=tuple(cpus), hugepages=tuple(pages)))
    return Topology(tuple(cells), reserved)
