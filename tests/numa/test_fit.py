"""Fitting on the fixture hosts: concrete plans and concrete reasons."""

from __future__ import annotations

import pytest

from ppec.numa import Allocation, NoFit, Plan, Request, fit
from tests.numa.conftest import load


def place(name: str, reqs: list[Request], reserved: frozenset[int] = frozenset()
          ) -> tuple[list[Plan], list[Allocation]]:
    topo = load(name, reserved)
    allocs: list[Allocation] = []
    plans = []
    for i, r in enumerate(reqs):
        plan = fit(topo, allocs, r)
        assert isinstance(plan, Plan), plan
        plans.append(plan)
        allocs.append(plan.allocation(f"vm{i}", r.vcpus, r.memory_mib))
    return plans, allocs


def test_one_node_when_it_fits() -> None:
    (plan,), _ = place("four-node", [Request(vcpus=4, memory_mib=4096)])
    assert len(plan.cells) == 1
    assert plan.vcpu_pins == (0, 1, 2, 3)
    assert plan.emulator_cpus == {0, 1, 2, 3}


def test_best_fit_keeps_the_big_hole() -> None:
    """Node 0 has 2 free cores, node 1 has 8: a 2-vCPU VM goes to node 0."""
    plans, _ = place("four-node", [Request(vcpus=6, memory_mib=1024),
                                   Request(vcpus=2, memory_mib=1024)])
    assert plans[0].cells[0].host_cell == 0
    assert plans[1].cells[0].host_cell == 0 and plans[1].vcpu_pins == (6, 7)


def test_split_only_when_no_single_node_fits() -> None:
    (plan,), _ = place("four-node", [Request(vcpus=12, memory_mib=12288)])
    assert [c.host_cell for c in plan.cells] == [0, 1]
    assert [len(c.vcpus) for c in plan.cells] == [8, 4]
    assert [c.memory_mib for c in plan.cells] == [8192, 4096]


def test_numa_nodes_n_splits_evenly() -> None:
    (plan,), _ = place("four-node", [Request(vcpus=6, memory_mib=6144, numa_nodes=3)])
    assert [len(c.vcpus) for c in plan.cells] == [2, 2, 2]
    assert [c.memory_mib for c in plan.cells] == [2048] * 3


def test_numa_nodes_1_refuses_to_split_with_reasons() -> None:
    topo = load("four-node")
    r = fit(topo, [], Request(vcpus=12, memory_mib=1024, numa_nodes=1))
    assert isinstance(r, NoFit)
    assert "node 0 has 8 free CPUs, needs 12" in str(r)


def test_reason_names_every_node() -> None:
    _, allocs = place("two-socket-smt", [Request(vcpus=26, memory_mib=1024),
                                             Request(vcpus=28, memory_mib=1024)])
    r = fit(load("two-socket-smt"), allocs,
            Request(vcpus=8, memory_mib=1024, numa_nodes=1))
    assert isinstance(r, NoFit)
    assert str(r) == ("node 0 has 6 free CPUs, needs 8; node 1 has 4 free CPUs, needs 8")


def test_memory_is_per_node() -> None:
    topo = load("asymmetric-memory")
    r = fit(topo, [], Request(vcpus=2, memory_mib=8192, numa_nodes=1))
    assert isinstance(r, Plan) and r.cells[0].host_cell == 0
    r = fit(topo, [Allocation("a", "dedicated", 1, frozenset({0}), ((0, 12288),))],
            Request(vcpus=2, memory_mib=8192, numa_nodes=1))
    assert isinstance(r, NoFit)
    assert "node 0 has 4096 MiB free, needs 8192 MiB" in str(r)
    assert "node 1 has 4096 MiB free, needs 8192 MiB" in str(r)


def test_prefer_takes_whole_cores_first() -> None:
    (plan,), _ = place("two-socket-smt", [Request(vcpus=4, memory_mib=1024)])
    assert sorted(plan.vcpu_pins) == [0, 1, 32, 33]
    assert plan.threads_per_core == 2


def test_isolate_holds_siblings_empty() -> None:
    plans, _ = place("two-socket-smt", [Request(vcpus=3, memory_mib=1024,
                                                threads="isolate")])
    assert plans[0].vcpu_pins == (0, 1, 2)
    assert plans[0].held == {0, 1, 2, 32, 33, 34}
    plans, _ = place("two-socket-smt", [Request(vcpus=3, memory_mib=1024, threads="isolate"),
                                        Request(vcpus=1, memory_mib=1024)])
    assert plans[1].vcpu_pins[0] not in {32, 33, 34}


def test_require_uses_whole_sibling_pairs_and_refuses_odd_counts() -> None:
    (plan,), _ = place("two-socket-smt", [Request(vcpus=4, memory_mib=1024,
                                                  threads="require")])
    assert sorted(plan.vcpu_pins) == [0, 1, 32, 33]
    r = fit(load("two-socket-smt"), [], Request(vcpus=3, memory_mib=1, threads="require",
                                                numa_nodes=1))
    assert isinstance(r, NoFit) and "multiple of 2" in str(r)
    r = fit(load("four-node"), [], Request(vcpus=2, memory_mib=1, threads="require"))
    assert isinstance(r, NoFit) and "no SMT sibling threads" in str(r)


def test_emulator_isolate_gets_its_own_cpu() -> None:
    (plan,), _ = place("one-node-nosmt", [Request(vcpus=2, memory_mib=1024,
                                                  emulator="isolate")])
    assert plan.vcpu_pins == (0, 1) and plan.emulator_cpus == {2}
    assert plan.held == {0, 1, 2}


def test_reserved_cpus_are_never_used() -> None:
    plans, _ = place("one-node-nosmt", [Request(vcpus=6, memory_mib=1024)],
                     reserved=frozenset({0, 1}))
    assert plans[0].vcpu_pins == (2, 3, 4, 5, 6, 7)
    r = fit(load("one-node-nosmt", frozenset({0, 1})), [], Request(vcpus=7, memory_mib=1))
    assert isinstance(r, NoFit) and "node 0 has 6 free CPUs, needs 7" in str(r)


def test_shared_vms_float_and_respect_overcommit() -> None:
    topo = load("one-node-nosmt")
    dedicated = Allocation("d", "dedicated", 6, frozenset(range(6)), ((0, 1024),))
    plan = fit(topo, [dedicated], Request(vcpus=2, memory_mib=512, policy="shared"))
    assert isinstance(plan, Plan) and plan.float_cpus == {6, 7} and plan.vcpu_pins == ()
    shared = [Allocation(f"s{i}", "shared", 2, frozenset(), ((-1, 512),)) for i in range(4)]
    r = fit(topo, [dedicated, *shared], Request(vcpus=1, memory_mib=512, policy="shared"),
            overcommit=4.0)
    assert isinstance(r, NoFit) and "exceeds overcommit 4" in str(r)
    # A dedicated VM may not take CPUs the shared VMs need.
    r = fit(topo, [*shared], Request(vcpus=7, memory_mib=512), overcommit=4.0)
    assert isinstance(r, NoFit) and "would leave 1 for shared VMs" in str(r)


@pytest.mark.parametrize("bad", [Request(vcpus=0, memory_mib=1),
                                 Request(vcpus=2, memory_mib=1, numa_nodes=9),
                                 Request(vcpus=1, memory_mib=1, numa_nodes=2)])
def test_impossible_requests(bad: Request) -> None:
    assert isinstance(fit(load("four-node"), [], bad), NoFit)
