#!/usr/bin/env python3
"""NUMA fit speed on the 128-thread fixture (8 nodes x 8 cores x 2 threads, 64 GiB each).

    .venv/bin/python bench/numa_fit.py [--runs 2000]

1. One fit with 80% of the CPUs already held by dedicated VMs of mixed sizes: the median
   of ``ppec.numa.fit`` against a naive first-fit scan (first node with enough free CPUs
   and memory, its first free CPUs; no SMT rules, no splits) on the same state, same run.
2. Fills to full, one shape at a time (``fit`` then record the allocation, until NoFit):
   per-fit time (each step's best of three fills; the final NoFit included), the count
   against the naive scan's, and a check that no VM was split over more nodes than needed
   (the fewest nodes whose free CPUs and memory could hold it, by the share-out rule
   ``fit`` documents).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from itertools import combinations
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ppec.numa import (
    Allocation,
    GuestCell,
    NoFit,
    Plan,
    Request,
    Topology,
    fit,
    from_capabilities,
)

FIXTURE = Path(__file__).resolve().parents[1] / "tests/fixtures/numa/epyc-8node-smt.xml"


def naive_fit(topo: Topology, allocs: Sequence[Allocation], req: Request) -> Plan | NoFit:
    """The baseline: first node, in id order, with enough free CPUs and memory."""
    held = {c for a in allocs for c in a.cpus}
    bound: dict[int, int] = {}
    for a in allocs:
        for cell, mib in a.memory:
            bound[cell] = bound.get(cell, 0) + mib
    for cell in topo.cells:
        free = [c.id for c in cell.cpus if c.id not in held and c.id not in topo.reserved]
        if len(free) >= req.vcpus and cell.memory_mib - bound.get(cell.id, 0) >= req.memory_mib:
            pins = tuple(free[:req.vcpus])
            return Plan("dedicated", pins, frozenset(pins),
                        (GuestCell(0, cell.id, tuple(range(req.vcpus)), req.memory_mib),),
                        frozenset(pins), frozenset(), 1)
    return NoFit(("no single node fits",))


Fit = Callable[[Topology, Sequence[Allocation], Request], "Plan | NoFit"]


def per_call(fn: Callable[[], object], runs: int) -> float:
    """Median seconds per call, over batches of calls (timer resolution and noise)."""
    batch = 20
    times = []
    for _ in range(max(runs // batch, 5)):
        t = time.perf_counter()
        for _ in range(batch):
            fn()
        times.append((time.perf_counter() - t) / batch)
    return statistics.median(times)


def eighty_percent(topo: Topology) -> list[Allocation]:
    rng = random.Random(13)
    total = sum(len(c.cpus) for c in topo.cells)
    allocs: list[Allocation] = []
    target = int(0.8 * total)
    while (held := sum(len(a.cpus) for a in allocs)) < target:
        threads = rng.choice(["prefer", "prefer", "isolate"])
        per = 2 if threads == "isolate" else 1      # isolate holds both threads of a core
        v = min(rng.choice([1, 2, 2, 4, 4, 6, 8]), max((target - held) // per, 1))
        req = Request(v, v * 2048, threads=threads)  # type: ignore[arg-type]
        plan = fit(topo, allocs, req)
        if isinstance(plan, NoFit):
            break
        allocs.append(plan.allocation(f"x{len(allocs)}", v, req.memory_mib))
    return allocs


def fewest_nodes(topo: Topology, allocs: Sequence[Allocation], req: Request) -> int:
    """The fewest nodes that could hold ``req`` (threads prefer): each node's share is at
    most its free CPUs and what its free memory allows at the request's MiB per vCPU."""
    held = {c for a in allocs for c in a.cpus}
    caps = []
    for cell in topo.cells:
        free = sum(1 for c in cell.cpus if c.id not in held and c.id not in topo.reserved)
        mib = cell.memory_mib - sum(m for a in allocs for c, m in a.memory if c == cell.id)
        caps.append(min(free, max(mib, 0) * req.vcpus // req.memory_mib))
    for k in range(1, len(caps) + 1):
        if any(sum(combo) >= req.vcpus and min(combo) >= 1
               for combo in combinations(caps, k)):
            return k
    return 0


def fill(topo: Topology, req: Request, fn: Fit, check: bool) -> tuple[int, list[float], int]:
    """VMs placed, seconds per fit call (the last NoFit included), over-split VMs."""
    allocs: list[Allocation] = []
    times: list[float] = []
    oversplit = 0
    while True:
        need = fewest_nodes(topo, allocs, req) if check else 0
        t = time.perf_counter()
        plan = fn(topo, allocs, req)
        times.append(time.perf_counter() - t)
        if isinstance(plan, NoFit):
            return len(allocs), times, oversplit
        if check and len(plan.cells) > need:
            oversplit += 1
        allocs.append(plan.allocation(f"f{len(allocs)}", req.vcpus, req.memory_mib))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    args = ap.parse_args()
    topo = from_capabilities(FIXTURE.read_text())
    total = sum(len(c.cpus) for c in topo.cells)
    allocs = eighty_percent(topo)
    held = sum(len(a.cpus) for a in allocs)
    print(f"host: {FIXTURE.name}, {len(topo.cells)} nodes, {total} threads")
    print(f"80% allocated: {len(allocs)} VMs hold {held} of {total} CPUs ({held / total:.0%})")
    for label, req in [("4 vCPU / 8 GiB", Request(4, 8192)),
                       ("8 vCPU / 16 GiB, threads isolate", Request(8, 16384,
                                                                    threads="isolate"))]:
        fast = per_call(lambda r=req: fit(topo, allocs, r), args.runs)
        slow = per_call(lambda r=req: naive_fit(topo, allocs, r), args.runs)
        got = fit(topo, allocs, req)
        where = "NoFit" if isinstance(got, NoFit) else \
            "nodes " + ",".join(str(c.host_cell) for c in got.cells)
        print(f"  {label}: fit {fast * 1e3:.3f} ms ({where}), naive first-fit "
              f"{slow * 1e3:.3f} ms, ratio fit / naive {fast / slow:.2f}")
    print("fill to full (per fit call, the final NoFit included):")
    for label, req in [("4 vCPU / 4 GiB", Request(4, 4096)),
                       ("6 vCPU / 6 GiB (splits once nodes run low)", Request(6, 6144)),
                       ("3 vCPU / 3 GiB", Request(3, 3072))]:
        count, times, oversplit = fill(topo, req, fit, check=True)
        ncount, ntimes, _ = fill(topo, req, naive_fit, check=False)
        # The same fill three more times, checks off: each step's best of three, so a
        # neighbour's burst on this shared machine does not pass for the fit's own time.
        runs = [fill(topo, req, fit, check=False)[1] for _ in range(3)]
        times = [min(step) for step in zip(*runs, strict=True)]
        nruns = [fill(topo, req, naive_fit, check=False)[1] for _ in range(3)]
        ntimes = [min(step) for step in zip(*nruns, strict=True)]
        med, worst = statistics.median(times), max(times)
        nmed = statistics.median(ntimes)
        print(f"  {label}: {count} VMs (naive first-fit {ncount}), over-split {oversplit}; "
              f"fit median {med * 1e3:.3f} ms, max {worst * 1e3:.3f} ms; naive median "
              f"{nmed * 1e3:.3f} ms; ratio {med / nmed:.2f}")


if __name__ == "__main__":
    main()
