#!/usr/bin/env python3
"""Placement speed: one decision among 10,000 hosts, and 1,000 placements in a row.

    .venv/bin/python bench/place.py [--hosts 10000] [--runs 30] [--sequential 1000,5000]

Prints the median of `place()` (vectorized index, exact checks on the best few) against a
bare linear scan applying the same filters host by host in Python (`filters.check`, then
the best score), measured in the same run on the same fleet: mixed 1/2/4/8-node hosts,
an HA group of 50 members. Then 1,000 sequential placements on 1,000 and on 5,000 hosts,
each placed VM applied to its host (`FleetIndex.update`) before the next decision, against
the same loop on the index as it was before it kept per-shape arrays and fits
(tests/placement/reference_place.py, fewer placements: it is slow) and against the bare
linear scan (a few placements), in placements per second and as ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ppec.numa import NoFit, fit
from ppec.numa import Request as NumaRequest
from ppec.placement import FleetIndex, Policy, Request, place
from ppec.placement.filters import Context, check
from tests.placement import reference_place
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
    ap.add_argument("--sequential", default="1000,5000", help="fleet sizes, comma-separated")
    ap.add_argument("--old-steps", type=int, default=1000,
                    help="placements in a row on the old index")
    ap.add_argument("--linear-steps", type=int, default=3,
                    help="placements in a row by the bare linear scan")
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

    for n in (int(x) for x in args.sequential.split(",")):
        sequential(n, args.old_steps, args.linear_steps)


SEQ = Request(vcpus=2, memory_mib=4096, numa=NumaRequest(2, 4096, policy="dedicated"))


def run_sequence(index: Any, decide: Callable[..., Any], steps: int) -> tuple[float, int]:
    """Seconds for up to ``steps`` placements of SEQ, each applied before the next."""
    placed = 0
    t = time.perf_counter()
    for i in range(steps):
        d = decide(index, SEQ, now=NOW)
        if d.host is None:
            break
        h = index.hosts[index.pos[d.host]]
        plan = fit(h.topology, h.allocations, SEQ.numa_request, overcommit=h.overcommit)
        assert not isinstance(plan, NoFit)
        index.update(with_allocations(h, [plan.allocation(f"seq{i}", 2, 4096)]))
        placed += 1
    return time.perf_counter() - t, placed


def sequential(n: int, old_steps: int, linear_steps: int) -> None:
    hosts = fleet(n, seed=2, now=NOW)
    total, placed = run_sequence(FleetIndex(hosts), place, 1000)
    rate = placed / total
    old_total, old_placed = run_sequence(reference_place.FleetIndex(hosts),
                                         reference_place.place, old_steps)
    old_rate = old_placed / old_total
    # The bare linear scan, placing and applying as the index does.
    current = list(hosts)
    t = time.perf_counter()
    for i in range(linear_steps):
        best = linear_scan(current, SEQ, {})
        if best is None:
            break
        j = next(k for k, h in enumerate(current) if h.name == best)
        h = current[j]
        plan = fit(h.topology, h.allocations, SEQ.numa_request, overcommit=h.overcommit)
        assert not isinstance(plan, NoFit)
        current[j] = with_allocations(h, [plan.allocation(f"lin{i}", 2, 4096)])
    lin_rate = linear_steps / (time.perf_counter() - t)
    print(f"sequential on {n:,} hosts (dedicated 2 vCPU / 4 GiB, each applied before the "
          f"next):")
    print(f"  place():          {placed} placements in {total:.2f} s: {rate:,.0f} per second "
          f"({total / max(placed, 1) * 1000:.2f} ms each)")
    print(f"  old index:        {old_placed} placements: {old_rate:,.0f} per second; "
          f"ratio new / old time per placement {old_rate / rate:.3f} ({rate / old_rate:.1f}x)")
    print(f"  bare linear scan: {linear_steps} placements: {lin_rate:,.2f} per second; "
          f"ratio place / linear scan {lin_rate / rate:.5f} ({rate / lin_rate:,.0f}x)")


if __name__ == "__main__":
    main()
