"""Filling a host with one request shape until nothing fits gives the optimum count.

The brute force explores every placement ppec's rules allow (any node that fits; when none
fits alone, any split over the fewest nodes, in any vCPU distribution), on an abstract
state: free CPUs (or whole cores, for isolate) and free memory per node.
"""

from __future__ import annotations

from functools import cache
from itertools import combinations, product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppec.numa import Allocation, Cell, Cpu, NoFit, Request, Topology, fit
from tests.numa.conftest import load


def fill(name: str, req: Request) -> int:
    topo = load(name)
    allocs: list[Allocation] = []
    while True:
        plan = fit(topo, allocs, req)
        if isinstance(plan, NoFit):
            return len(allocs)
        allocs.append(plan.allocation(f"vm{len(allocs)}", req.vcpus, req.memory_mib))


def brute(units: tuple[int, ...], mem: tuple[int, ...], v: int, per_vcpu_mib: int) -> int:
    """Most VMs of v vCPUs (v * per_vcpu_mib MiB) that fit, under the split rule."""

    @cache
    def best(state: tuple[tuple[int, int], ...]) -> int:
        moves = []
        for i, (u, m) in enumerate(state):
            if u >= v and m >= v * per_vcpu_mib:
                moves.append({i: v})
        if not moves:
            n = len(state)
            for k in range(2, n + 1):
                for combo in combinations(range(n), k):
                    for counts in product(range(1, v + 1), repeat=k):
                        if sum(counts) != v:
                            continue
                        if all(state[i][0] >= c and state[i][1] >= c * per_vcpu_mib
                               for i, c in zip(combo, counts, strict=True)):
                            moves.append(dict(zip(combo, counts, strict=True)))
                if moves:
                    break
        result = 0
        for move in moves:
            nxt = tuple((u - move.get(i, 0), m - move.get(i, 0) * per_vcpu_mib)
                        for i, (u, m) in enumerate(state))
            result = max(result, 1 + best(tuple(sorted(nxt))))
        return result

    return best(tuple(sorted(zip(units, mem, strict=True))))


@pytest.mark.parametrize(("name", "vcpus", "per_vcpu_mib", "threads"), [
    ("one-node-nosmt", 3, 1024, "prefer"),
    ("one-node-nosmt", 2, 5120, "prefer"),
    ("four-node", 3, 2048, "prefer"),
    ("four-node", 5, 1024, "prefer"),
    ("four-node", 3, 8192, "prefer"),
    ("asymmetric-memory", 2, 2048, "prefer"),
    ("asymmetric-memory", 3, 1024, "prefer"),
    ("two-socket-smt", 5, 1024, "isolate"),
    ("two-socket-smt", 6, 4096, "prefer"),
])
def test_fill_count_is_optimal(name: str, vcpus: int, per_vcpu_mib: int, threads: str) -> None:
    topo = load(name)
    units = tuple(len(c.cpus) // (2 if threads == "isolate" else 1) for c in topo.cells)
    mem = tuple(c.memory_mib for c in topo.cells)
    req = Request(vcpus=vcpus, memory_mib=vcpus * per_vcpu_mib, threads=threads)  # type: ignore[arg-type]
    assert fill(name, req) == brute(units, mem, vcpus, per_vcpu_mib)


@pytest.mark.parametrize(("name", "req", "count"), [
    ("epyc-8node-smt", Request(vcpus=8, memory_mib=8192), 16),
    ("epyc-8node-smt", Request(vcpus=4, memory_mib=4096, threads="isolate"), 16),
    ("epyc-8node-smt", Request(vcpus=4, memory_mib=4096, threads="require"), 32),
    ("two-socket-smt", Request(vcpus=2, memory_mib=1024, emulator="isolate"), 21),
])
def test_fill_counts_on_large_hosts(name: str, req: Request, count: int) -> None:
    """Large hosts, beyond brute force: the count is the arithmetic bound."""
    assert fill(name, req) == count


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(1, 8)), min_size=1, max_size=3),
       st.integers(1, 5), st.integers(1, 4))
def test_fill_is_optimal_on_small_random_hosts(nodes: list[tuple[int, int]], v: int,
                                               per_vcpu_gib: int) -> None:
    cells = []
    next_id = 0
    for i, (cpus, gib) in enumerate(nodes):
        ids = range(next_id, next_id + cpus)
        next_id += cpus
        cells.append(Cell(i, gib * 1024, tuple(Cpu(c, 0, c, frozenset({c})) for c in ids)))
    topo = Topology(tuple(cells))
    req = Request(vcpus=v, memory_mib=v * per_vcpu_gib * 1024)
    allocs: list[Allocation] = []
    while not isinstance(plan := fit(topo, allocs, req), NoFit):
        allocs.append(plan.allocation(f"vm{len(allocs)}", v, req.memory_mib))
    assert len(allocs) == brute(tuple(c for c, _ in nodes), tuple(g * 1024 for _, g in nodes),
                                v, per_vcpu_gib * 1024)
