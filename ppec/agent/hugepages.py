"""Huge pages per NUMA node as the kernel counts them (sysfs): what an operator reserved
on each node (``nr_hugepages``) and what no process has faulted in yet (``free``). The
first brick of issue 29's hugepage-backed VMs: reported by ``host show --numa``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ppec.numa import Allocation, Topology

NODES = Path("/sys/devices/system/node")


def per_node(node: int, root: Path = NODES) -> list[dict[str, int]]:
    """Each page size's total and free pages on ``node``, smallest size first; [] where
    sysfs has no such node (libvirt's test driver models cells the machine lacks)."""
    out = []
    base = root / f"node{node}" / "hugepages"
    try:
        sizes = sorted(base.iterdir(), key=lambda p: int(p.name[10:-2]))
    except (OSError, ValueError):
        return []
    for d in sizes:   # hugepages-2048kB
        try:
            out.append({"size_kib": int(d.name[10:-2]),
                        "total": int((d / "nr_hugepages").read_text()),
                        "free": int((d / "free_hugepages").read_text())})
        except (OSError, ValueError):
            continue
    return out


def pools(cells: list[int], root: Path = NODES) -> dict[int, dict[int, int]]:
    """node -> page size (KiB) -> pages reserved there."""
    return {n: {h["size_kib"]: h["total"] for h in per_node(n, root)} for n in cells}


def view(topo: Topology, allocs: list[Allocation], page_kib: int,
         reserved: dict[int, dict[int, int]], backed: dict[str, int]
         ) -> tuple[Topology, list[Allocation]]:
    """The host as the NUMA fit must see it for a VM backed by ``page_kib`` pages (0:
    ordinary memory). Huge pages are a pool of their own on each node: an ordinary VM's
    node has its memory less every page reserved there, and holds no hugepage VM's
    memory; a hugepage VM's node has that size's pool and the VMs of that size in it.
    CPUs are the same in both views. ``backed``: VM -> its page size, for those that
    have one (from the ledger's documents, so a restart keeps the count)."""
    if not page_kib:
        cells = tuple(replace(c, memory_mib=max(c.memory_mib - sum(
            n * kib // 1024 for kib, n in reserved.get(c.id, {}).items()), 0))
            for c in topo.cells)
        return (Topology(cells, topo.reserved),
                [replace(a, memory=()) if backed.get(a.vm) else a for a in allocs])
    cells = tuple(replace(c, memory_mib=reserved.get(c.id, {}).get(page_kib, 0) * page_kib
                          // 1024) for c in topo.cells)
    return (Topology(cells, topo.reserved),
            [a if backed.get(a.vm) == page_kib else replace(a, memory=()) for a in allocs])


def shortage(fit_topo: Topology, allocs: list[Allocation], page_kib: int,
             memory_mib: int) -> str:
    """Why a hugepage VM does not fit, in pages: each node's free pages of the size."""
    used: dict[int, int] = {}
    for a in allocs:
        for cell, mib in a.memory:
            used[cell] = used.get(cell, 0) + mib
    size = f"{page_kib // 1024}M" if page_kib < 1 << 20 else f"{page_kib >> 20}G"
    free = ", ".join(f"node {c.id} has {(c.memory_mib - used.get(c.id, 0)) * 1024 // page_kib}"
                     f" free {size} pages" for c in fit_topo.cells)
    return f"{free}; needs {memory_mib * 1024 // page_kib} in all"
