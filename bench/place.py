#!/usr/bin/env python3
"""Placement speed: one decision among 10,000 hosts, and 1,000 placements in a row.

    .venv/bin/python bench/place.py [--hosts 10000] [--runs 30]

Prints the median of `place()` (vectorized index, exact checks on the best few) against a
bare linear scan applying the same filters host by host in Python (`filters.check`, then
the best score), measured in the same run on the same fleet: mixed 1/2/4/8-node hosts,
an HA group of 50 members. Then 1,000 sequential placements on 1,000 hosts, each placed
VM applied to its host before the next decision.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ppec.numa import NoFit, fit
from ppec.numa import Request as NumaRequest
from ppec.placement import FleetIndex, Policy, Request, place
from ppec.placement.filters import Context, check
from tests.placement.fleets import fleet, with_allocations

NOW = 1000.0


def linear_scan(hosts: list, req: Request, taken: dict[str, str]) -> str | None:  # type: ignore[type-arg]
    """The baseline: every filter on every host, in Python, then the cheapest passing."""
    ctx = Context(req, Policy(), NOW, taken, None)
    best, best_key = None, None
    for h in hosts:
        if check(h, ctx) is None:
            key = (h.cost, -h.summary.vms, h.name)
            if best_key is None or key < best_key:
                best, best_key = h.name, key
    return best


def timed(fn, runs: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()

    t = time.perf_counter()
    hosts = fleet(args.hosts, seed=1, now=NOW)
    built = time.perf_counter() - t
    t = time.perf_counter()
    index = FleetIndex(hosts)
    indexed = time.perf_counter() - t
    taken = {h.name: f"member-{i}" for i, h in enumerate(hosts[::max(1, args.hosts // 50)][:50])}
    print(f"fleet: {args.hosts} hosts (mixed 1/2/4/8-node), generated in {built:.1f} s, "
          f"indexed in {indexed * 1000:.0f} ms; HA group of {len(taken)} members")
    for label, req in [
        ("shared 2 vCPU / 4 GiB, HA group", Request(vcpus=2, memory_mib=4096, ha_group="g")),
        ("dedicated 8 vCPU / 16 GiB, one NUMA node, region r1, tag ssd",
         Request(vcpus=8, memory_mib=16384, region="r1", tags=frozenset({"ssd"}),
                 numa=NumaRequest(8, 16384, policy="dedicated", numa_nodes=1))),
    ]:
        fast, d = timed(lambda r=req: place(index, r, now=NOW, ha_taken=taken), args.runs)
        slow, best = timed(lambda r=req: linear_scan(hosts, r, taken), max(3, args.runs // 10))
        print(f"  {label}:")
        print(f"    place():      median {fast * 1000:7.2f} ms -> {d.host}")  # type: ignore[attr-defined]
        print(f"    linear scan:  median {slow * 1000:7.2f} ms -> {best}")
        print(f"    ratio place / linear scan: {fast / slow:.4f} ({slow / fast:.0f}x faster)")

    small = fleet(1000, seed=2, now=NOW)
    index = FleetIndex(small)
    req = Request(vcpus=2, memory_mib=4096,
                  numa=NumaRequest(2, 4096, policy="dedicated"))
    placed = 0
    t = time.perf_counter()
    for i in range(1000):
        d = place(index, req, now=NOW)
        if d.host is None:
            break
        h = index.hosts[index.pos[d.host]]
        plan = fit(h.topology, h.allocations, req.numa_request, overcommit=h.overcommit)
        assert not isinstance(plan, NoFit)
        index.update(with_allocations(h, [plan.allocation(f"seq{i}", 2, 4096)]))
        placed += 1
    total = time.perf_counter() - t
    print(f"sequential: {placed} placements (dedicated 2 vCPU / 4 GiB) on 1,000 hosts in "
          f"{total:.2f} s ({total / max(placed, 1) * 1000:.2f} ms each, index updated after "
          f"each)")


if __name__ == "__main__":
    main()
