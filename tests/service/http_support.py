"""Helpers for the HTTP side's tests: a store filled through the real Store and fleetstate
functions (from a real agent, or generated in the real agent's snapshot shape for size),
the HTTP server in a thread, and JSON/HTTP calls that keep status codes."""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppec.core.clock import utc_now
from ppec.numa.fit import Allocation
from ppec.numa.serial import allocation_to_dict, topology_to_dict
from ppec.numa.topology import Cell, Cpu, Topology
from ppec.operator.store import Host, Store, fleetstate

SHAPES = ((2, 8, 2), (2, 16, 2), (4, 8, 2), (1, 24, 1))   # (cells, cores per cell, threads)


def topology(cells: int, cores: int, threads: int, memory_mib: int) -> Topology:
    out, cpu = [], 0
    for cell in range(cells):
        ids = [[cpu + t * cores + k for t in range(threads)] for k in range(cores)]
        cpus = tuple(Cpu(i, cell, k, frozenset(sib)) for k, sib in enumerate(ids) for i in sib)
        out.append(Cell(cell, memory_mib // cells, tuple(sorted(cpus, key=lambda c: c.id))))
        cpu += cores * threads
    return Topology(tuple(out), frozenset({0}))


def snapshot(host: str, rng: random.Random, taken_at: float, vms: int) -> dict[str, Any]:
    """One snapshot in the real agent's shape (``host.snapshot``): stats, topology,
    allocations (a few dedicated VMs, the rest shared) and the VM list."""
    cells, cores, threads = rng.choice(SHAPES)
    memory = cells * 65536
    topo = topology(cells, cores, threads, memory)
    free = sorted(topo.cpu_ids - topo.reserved)
    allocs, views = [], []
    for i in range(vms):
        name = f"{host}-vm{i:03d}"
        dedicated = i % 4 == 0 and len(free) >= 2
        cpus = frozenset(free[:2]) if dedicated else frozenset()
        free = free[2:] if dedicated else free
        node = next((c.id for c in topo.cells if cpus & {x.id for x in c.cpus}), -1)
        allocs.append(Allocation(name, "dedicated" if dedicated else "shared", 2, cpus,
                                 ((node, 2048),)))
        views.append({"address": "", "created_at": utc_now(), "disk_bytes": 10 << 30,
                      "disk_path": f"/var/lib/ppec/disks/{name}.qcow2", "host": host,
                      "image": "", "ledger": "present", "memory_mib": 2048, "name": name,
                      "state": "running" if i % 10 else "shut-off",
                      "uuid": f"{rng.getrandbits(128):032x}", "vcpus": 2})
    return {"agent_version": "0.1.0", "allocations": [allocation_to_dict(a) for a in allocs],
            "committed_memory_mib": 2048 * vms, "committed_vcpus": 2 * vms,
            "cpu_overcommit": 4.0, "cpu_percent": round(rng.uniform(0, 90), 1),
            "cpus": len(topo.cpu_ids), "dedicated_cpus": sum(len(a.cpus) for a in allocs),
            "domain_type": "kvm", "host": host, "hypervisor": "QEMU", "kernel": "6.1.0",
            "libvirt_uri": "qemu:///system", "libvirt_version": "9.0.0",
            "memory_mib": memory, "numa_nodes": cells, "os_memory_available_mib": memory // 2,
            "reserved_cpus": [0], "reserved_memory_mib": 0, "storage_dir": "/var/lib/ppec",
            "storage_free_bytes": rng.randrange(1, 4) << 40, "storage_total_bytes": 4 << 40,
            "taken_at": taken_at, "topology": topology_to_dict(topo), "uptime_s": 1000.0,
            "vm_count": vms, "vms": views}


def fill(location: str | Path, hosts: int, *, vms: int = 8, seed: int = 1,
         now: float | None = None, failed_every: int = 0) -> list[str]:
    """A store of ``hosts`` generated hosts (regions r0.., racks k0..), each with one
    snapshot taken within the last few seconds, recorded with ``fleetstate.record_round``
    as the service's jobs do; every ``failed_every``-th host then fails a round."""
    rng = random.Random(seed)
    now = time.time() if now is None else now
    store = Store(str(location))
    try:
        names = [f"h{i:05d}" for i in range(hosts)]
        for i, name in enumerate(names):
            store.add_host(Host(name=name, address=f"127.0.0.{10 + i % 200}",
                                region=f"r{i % 4}", rack=f"k{i % 40:02d}",
                                drained=i % 97 == 5))
        ok = [fleetstate.Success(n, now - rng.uniform(0, 5),
                                 snapshot(n, rng, now - rng.uniform(0, 5), vms))
              for n in names]
        for s in ok:
            s.snapshot["taken_at"] = s.taken_at
        fleetstate.record_round(store, ok, [], now)
        with store.transaction() as db:
            db.executemany(
                "INSERT INTO vms (name, host, state, vcpus, memory_mib, disk_bytes, image, "
                "created_at, updated_at) VALUES (?, ?, 'running', 2, 2048, ?, '', ?, ?)",
                # 1 GiB: vms.disk_bytes is a 4-byte INTEGER on PostgreSQL (2 GiB at most)
                [(v["name"], s.host, 1 << 30, utc_now(), utc_now())
                 for s in ok for v in s.snapshot["vms"]])
        if failed_every:
            fleetstate.record_round(store, [], [
                fleetstate.Failure(n, "UNREACHABLE", "connection refused")
                for n in names[::failed_every]], now)
        return names
    finally:
        store.close()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def get(url: str, token: str | None = None, timeout: float = 30) -> Answer:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return Answer(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


@contextmanager
def serving(location: str | Path, **kwargs: Any) -> Iterator[str]:
    """The real app on a free loopback port, in a thread; yields its base URL."""
    from ppec.service.http import server
    from ppec.service.http.app import create_app
    handle = server.start(create_app(str(location), **kwargs), "127.0.0.1", 0)
    try:
        yield handle.url
    finally:
        handle.stop()
