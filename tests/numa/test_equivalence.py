"""The faster fit gives exactly what the fit before it gave: the same plan, or the same
reasons, on every state of random request sequences (the oracle: tests/numa/reference_fit)."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppec.numa import Allocation, NoFit, Request, Topology, fit
from tests.numa import reference_fit
from tests.numa.conftest import NAMES, load
from tests.numa.test_properties import requests, topologies


def _same_over(topo: Topology, ops: list[tuple[Request, bool]], overcommit: float) -> int:
    """Apply ``ops`` (a request, and whether to delete a VM first) and compare each fit;
    returns how many fits were compared."""
    allocs: list[Allocation] = []
    compared = 0
    for i, (req, delete_one) in enumerate(ops):
        if delete_one and allocs:
            allocs.pop(i % len(allocs))
        new = fit(topo, allocs, req, overcommit=overcommit)
        old = reference_fit.fit(topo, allocs, req, overcommit=overcommit)
        assert new == old, (req, allocs)
        compared += 1
        if not isinstance(new, NoFit):
            allocs.append(new.allocation(f"vm{i}", req.vcpus, req.memory_mib))
    return compared


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topologies(), st.lists(st.tuples(requests, st.booleans()), min_size=1, max_size=30),
       st.sampled_from([1.0, 4.0]))
def test_same_results_on_random_hosts(topo: Topology, ops: list[tuple[Request, bool]],
                                      overcommit: float) -> None:
    _same_over(topo, ops, overcommit)


@pytest.mark.parametrize("name", NAMES)
def test_same_results_filling_the_fixtures(name: str) -> None:
    """Large real topologies, filled past full with a mix of every option (splits, NoFits,
    reserved CPUs), so the slow paths (splits over many nodes) are compared too."""
    rng = random.Random(name)
    topo = load(name, reserved=frozenset({0, 1}) if name != "one-node-nosmt" else frozenset())
    ops = []
    for _ in range(120):
        v = rng.randint(1, 12)
        ops.append((Request(
            v, rng.randint(1, 16) * 512,
            policy=rng.choice(["dedicated", "dedicated", "dedicated", "shared"]),  # type: ignore[arg-type]
            numa_nodes=rng.choice([None, None, None, 1, 2, 3]),
            threads=rng.choice(["prefer", "isolate", "require"]),  # type: ignore[arg-type]
            emulator=rng.choice(["share", "isolate"])),  # type: ignore[arg-type]
            rng.random() < 0.15))
    assert _same_over(topo, ops, 4.0) == 120
