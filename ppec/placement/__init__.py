"""Choosing a host for a VM. Pure: snapshots and a request in, a ranking and reasons out.

For now one rule set: hosts that are drained, outside the requested region, or too small
are rejected, each with the numbers that rejected it; the rest are ranked least-loaded
first (lowest share of memory committed). The full filter/weigher library replaces this.

    >>> from ppec.placement import HostView, Request, place
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HostView:
    name: str
    region: str
    drained: bool
    cpus: int                 # usable CPUs (reserved ones excluded)
    memory_mib: int           # usable memory (reserved excluded)
    committed_mib: int
    storage_free_bytes: int


@dataclass(frozen=True)
class Request:
    vcpus: int
    memory_mib: int
    disk_bytes: int
    region: str = ""


@dataclass(frozen=True)
class Rejection:
    host: str
    rule: str
    reason: str


@dataclass(frozen=True)
class Decision:
    ranked: tuple[str, ...]
    rejected: tuple[Rejection, ...]


def _reject(host: HostView, req: Request) -> Rejection | None:
    if host.drained:
        return Rejection(host.name, "drained", f"{host.name}: drained")
    if req.region and host.region != req.region:
        return Rejection(host.name, "region",
                         f"{host.name}: region {host.region or '(none)'}, needs {req.region}")
    if req.vcpus > host.cpus:
        return Rejection(host.name, "cpu",
                         f"{host.name}: {host.cpus} usable CPUs, needs {req.vcpus}")
    free = host.memory_mib - host.committed_mib
    if req.memory_mib > free:
        return Rejection(host.name, "memory",
                         f"{host.name}: {free} MiB memory free, needs {req.memory_mib} MiB")
    if req.disk_bytes > host.storage_free_bytes:
        return Rejection(host.name, "disk",
                         f"{host.name}: {host.storage_free_bytes >> 20} MiB storage free, "
                         f"needs {req.disk_bytes >> 20} MiB")
    return None


def place(hosts: list[HostView], req: Request) -> Decision:
    rejected: list[Rejection] = []
    fits: list[HostView] = []
    for host in hosts:
        why = _reject(host, req)
        if why is None:
            fits.append(host)
        else:
            rejected.append(why)
    fits.sort(key=lambda h: (h.committed_mib / max(h.memory_mib, 1), h.name))
    return Decision(tuple(h.name for h in fits), tuple(rejected))
