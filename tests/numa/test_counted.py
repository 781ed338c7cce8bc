"""The fit on counts (ppec.numa.counted) decides exactly what ppec.numa.fit decides, for the
requests it applies to: the same verdict, the same reasons word for word, the same nodes
with the same vCPUs and MiB each, on every state of random request sequences (including
VMs of other kinds, isolate and require, that only fit applies)."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppec.numa import Allocation, NoFit, Request, Topology, counted, fit
from ppec.placement.model import HostSnapshot, free_counts
from tests.numa.conftest import NAMES, load
from tests.numa.test_properties import requests, topologies


def free_of(topo: Topology, allocs: list[Allocation]) -> counted.Free:
    return free_counts(HostSnapshot(name="h", topology=topo, allocations=tuple(allocs)))


def _same_over(topo: Topology, ops: list[tuple[Request, bool]], overcommit: float) -> int:
    allocs: list[Allocation] = []
    compared = 0
    for i, (req, delete_one) in enumerate(ops):
        if delete_one and allocs:
            allocs.pop(i % len(allocs))
        exact = fit(topo, allocs, req, overcommit=overcommit)
        if counted.applies(req):
            free = free_of(topo, allocs)
            got = counted.verdict(free, req, overcommit)
            if isinstance(exact, NoFit):
                assert got == exact, (req, allocs)
            else:
                assert not isinstance(got, NoFit), (req, got, exact)
                want = tuple((c.host_cell, len(c.vcpus), c.memory_mib) for c in exact.cells)
                assert tuple((free.cell_ids[j], n, m) for j, n, m in got) == want
                # Applying the parts to the counts gives the counts of the new state.
                free.take(req, got)
                after = free_of(topo, [*allocs, exact.allocation("x", req.vcpus,
                                                                  req.memory_mib)])
                assert free == after
            compared += 1
        if not isinstance(exact, NoFit):
            allocs.append(exact.allocation(f"vm{i}", req.vcpus, req.memory_mib))
    return compared


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topologies(), st.lists(st.tuples(requests, st.booleans()), min_size=1, max_size=30),
       st.sampled_from([1.0, 4.0]))
def test_same_verdicts_on_random_hosts(topo: Topology, ops: list[tuple[Request, bool]],
                                       overcommit: float) -> None:
    _same_over(topo, ops, overcommit)


@pytest.mark.parametrize("name", NAMES)
def test_same_verdicts_filling_the_fixtures(name: str) -> None:
    rng = random.Random(name)
    topo = load(name, reserved=frozenset({0, 1}) if name != "one-node-nosmt" else frozenset())
    ops = []
    for _ in range(150):
        ops.append((Request(
            rng.randint(1, 12), rng.randint(1, 16) * 512,
            policy=rng.choice(["dedicated", "dedicated", "shared"]),
            numa_nodes=rng.choice([None, None, None, 1, 2, 3]),
            threads=rng.choice(["prefer", "prefer", "isolate", "require"]),
            emulator=rng.choice(["share", "share", "isolate"])),
            rng.random() < 0.15))
    assert _same_over(topo, ops, 4.0) > 40


def test_only_requests_that_need_no_thread_ids() -> None:
    assert counted.applies(Request(2, 512))
    assert counted.applies(Request(2, 512, policy="dedicated"))
    assert not counted.applies(Request(2, 512, policy="dedicated", threads="isolate"))
    assert not counted.applies(Request(2, 512, policy="dedicated", threads="require"))
    assert not counted.applies(Request(2, 512, policy="dedicated", emulator="isolate"))
