"""Random and hand-made fleets of placement snapshots, for tests and benchmarks."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

from ppec.numa import Allocation, NoFit, Request, fit
from ppec.numa.serial import allocation_to_dict, topology_to_dict
from ppec.numa.topology import Cell, Cpu, Topology
from ppec.operator.store import Host, Store
from ppec.placement import HostSnapshot


def topology(nodes: int, cores: int, threads: int, gib: int) -> Topology:
    total = nodes * cores
    cells = []
    for c in range(nodes):
        cpus = []
        for k in range(cores):
            core = c * cores + k
            sib = frozenset(core + t * total for t in range(threads))
            cpus.extend(Cpu(i, 0, core, sib) for i in sib)
        cells.append(Cell(c, gib * 1024, tuple(sorted(cpus, key=lambda x: x.id))))
    return Topology(tuple(cells))


SHAPES = [(1, 8, 1, 32), (2, 8, 2, 64), (4, 8, 1, 64), (8, 8, 2, 64)]


def fill_randomly(topo: Topology, rng: random.Random, n: int) -> tuple[Allocation, ...]:
    allocs: list[Allocation] = []
    for i in range(n):
        req = Request(vcpus=rng.randint(1, 6), memory_mib=rng.choice([512, 2048, 8192]),
                      policy=rng.choice(["dedicated", "shared"]))  # type: ignore[arg-type]
        plan = fit(topo, allocs, req)
        if not isinstance(plan, NoFit):
            allocs.append(plan.allocation(f"x{i}", req.vcpus, req.memory_mib))
    return tuple(allocs)


def fleet(n: int, seed: int = 0, now: float = 1000.0) -> list[HostSnapshot]:
    """Mixed 1/2/4/8-node hosts over 4 regions, 50 racks, 10 power domains."""
    rng = random.Random(seed)
    hosts = []
    for i in range(n):
        topo = topology(*SHAPES[i % len(SHAPES)])
        hosts.append(HostSnapshot(
            name=f"h{i:05d}", topology=topo, allocations=fill_randomly(topo, rng,
                                                                         rng.randint(0, 6)),
            region=f"r{i % 4}", rack=f"k{i % 50}", power_domain=f"p{i % 10}",
            vrf=f"v{i % 3}", networks=frozenset({f"v{i % 3}"}),
            tags=frozenset(rng.sample(["ssd", "gpu", "10g"], rng.randint(0, 2))),
            drained=rng.random() < 0.02, taken_at=now - rng.uniform(0, 100),
            cost=rng.choice([0.5, 1.0, 2.0]), power_idle_w=100.0, power_max_w=400.0,
            storage_free_bytes=1 << 40))
    return hosts


def with_allocations(h: HostSnapshot, extra: list[Allocation]) -> HostSnapshot:
    return replace(h, allocations=(*h.allocations, *extra))


def snapshot_data(h: HostSnapshot, **extra: Any) -> dict[str, Any]:
    """``h`` as its agent's `host.snapshot` answers it (what `ppec sync` stores)."""
    return {"taken_at": h.taken_at, "topology": topology_to_dict(h.topology),
            "allocations": [allocation_to_dict(a) for a in h.allocations],
            "cpu_overcommit": h.overcommit, "storage_free_bytes": h.storage_free_bytes,
            "networks": [{"name": n, "kind": "bridge", "source": f"br-{n}", "mtu": 0,
                          "present": True, "up": True, "device_mtu": 1500}
                         for n in sorted(h.networks)],
            **extra}


def store_fleet(db: Path, hosts: list[HostSnapshot], **extra: Any) -> None:
    """Put ``hosts`` in the operator store at ``db`` as `ppec host add` and `ppec sync`
    would: the inventory, and the latest snapshot of each reachable host. `ppec host
    export-snapshot` then writes the file `ppec place --from-snapshot` reads."""
    store = Store(db)
    try:
        for h in hosts:
            store.add_host(Host(name=h.name, address="local", region=h.region, rack=h.rack,
                                power_domain=h.power_domain, vrf=h.vrf, cost=h.cost,
                                tags=tuple(sorted(h.tags)), drained=h.drained,
                                power_idle_w=h.power_idle_w, power_max_w=h.power_max_w))
            if h.reachable:
                store.save_snapshot(h.name, h.taken_at, snapshot_data(h, **extra))
    finally:
        store.close()


HSPACE = "/usr/lib/ganeti/3.0/usr/bin/hspace"


def identical(n: int, now: float, cpus: int = 16, gib: int = 64, disk_gib: int = 1024,
              reserved: int = 1) -> list[HostSnapshot]:
    """n empty single-node hosts without SMT, like `hspace --simulate` models them: one CPU
    reserved for the host, vCPUs at most one per remaining CPU (overcommit 1)."""
    topo = topology(1, cpus, 1, gib)
    topo = Topology(topo.cells, frozenset(range(reserved)))
    return [HostSnapshot(name=f"n{i:04d}", topology=topo, taken_at=now, overcommit=1.0,
                         storage_free_bytes=disk_gib << 30) for i in range(n)]


def hspace_count(n: int, vcpus: int, mem_mib: int, disk_mib: int, cpus: int = 16,
                 gib: int = 64, disk_gib: int = 1024, timeout: float = 600) -> int:
    """Ganeti's own answer for the same empty fleet: standard-spec allocation, no N+1."""
    import subprocess
    done = subprocess.run(
        [HSPACE, f"--simulate=p,{n},{disk_gib * 1024},{gib * 1024},{cpus}",
         f"--standard-alloc={disk_mib},{mem_mib},{vcpus}", "--machine-readable",
         "--no-capacity-checks", "--max-cpu=1", "--disk-template=plain"],
        capture_output=True, text=True, timeout=timeout, check=True)
    values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return int(values["HTS_ALLOC_INSTANCES"])
