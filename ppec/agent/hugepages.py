"""Huge pages per NUMA node as the kernel counts them (sysfs): what an operator reserved
on each node (``nr_hugepages``) and what no process has faulted in yet (``free``). The
first brick of issue 29's hugepage-backed VMs: reported by ``host show --numa``."""

from __future__ import annotations

from pathlib import Path

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
