"""Invariants of the fit over random topologies and random request sequences."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppec.numa import Allocation, Cell, Cpu, NoFit, Plan, Request, Topology, fit


@st.composite
def topologies(draw: st.DrawFn) -> Topology:
    cells = draw(st.integers(1, 4))
    cores = draw(st.integers(1, 6))
    tpc = draw(st.sampled_from([1, 2]))
    total = cells * cores
    out = []
    for c in range(cells):
        cpus = []
        for k in range(cores):
            core = c * cores + k
            sib = frozenset(core + t * total for t in range(tpc))
            cpus.extend(Cpu(i, 0, core, sib) for i in sib)
        out.append(Cell(c, draw(st.integers(512, 8192)), tuple(sorted(cpus, key=lambda x: x.id))))
    all_ids = sorted(i.id for cell in out for i in cell.cpus)
    reserved = draw(st.frozensets(st.sampled_from(all_ids), max_size=2))
    return Topology(tuple(out), reserved)


requests = st.builds(
    Request, vcpus=st.integers(1, 8), memory_mib=st.integers(64, 4096),
    policy=st.sampled_from(["dedicated", "dedicated", "dedicated", "shared"]),
    numa_nodes=st.sampled_from([None, None, 1, 2]),
    threads=st.sampled_from(["prefer", "isolate", "require"]),
    emulator=st.sampled_from(["share", "isolate"]))


def _check(topo: Topology, allocs: list[Allocation], plans: dict[str, tuple[Request, Plan]]
           ) -> None:
    dedicated = [a for a in allocs if a.policy == "dedicated"]
    seen: set[int] = set()
    for a in dedicated:
        assert not (a.cpus & seen), "a host CPU held by two dedicated VMs"
        seen |= a.cpus
    assert not (seen & topo.reserved), "a reserved CPU was given to a VM"
    for cell in topo.cells:
        bound = sum(mib for a in dedicated for c, mib in a.memory if c == cell.id)
        assert bound <= cell.memory_mib, f"node {cell.id} memory overcommitted"
    for req, plan in plans.values():
        if plan.policy == "shared":
            continue
        pins = plan.vcpu_pins
        assert len(pins) == req.vcpus == len(set(pins))
        assert set(pins) <= plan.held and plan.emulator_cpus <= plan.held
        siblings = {c.id: c.siblings for cell in topo.cells for c in cell.cpus}
        if req.threads == "isolate":
            for p in pins:   # the whole core is this VM's, and only one vCPU is on it
                assert siblings[p] <= plan.held
                assert len(siblings[p] & set(pins)) == 1
        if req.threads == "require":
            for p in pins:
                assert siblings[p] <= set(pins) and len(siblings[p]) > 1
        for gc in plan.cells:   # each guest cell's vCPUs sit on its host cell
            assert {topo.cell_of(pins[v]) for v in gc.vcpus} == {gc.host_cell}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topologies(), st.lists(st.tuples(requests, st.booleans()), min_size=1, max_size=25))
def test_invariants_hold_over_any_sequence(topo: Topology,
                                           ops: list[tuple[Request, bool]]) -> None:
    allocs: list[Allocation] = []
    plans: dict[str, tuple[Request, Plan]] = {}
    for i, (req, delete_one) in enumerate(ops):
        if delete_one and allocs:
            gone = allocs.pop(i % len(allocs))
            plans.pop(gone.vm)
        plan = fit(topo, allocs, req)
        if isinstance(plan, NoFit):
            assert plan.reasons
            continue
        if plan.policy == "dedicated" and req.numa_nodes is None and len(plan.cells) > 1:
            one = fit(topo, allocs, Request(**{**req.__dict__, "numa_nodes": 1}))
            assert isinstance(one, NoFit), "split a request that fits in one node"
        name = f"vm{i}"
        allocs.append(plan.allocation(name, req.vcpus, req.memory_mib))
        plans[name] = (req, plan)
        _check(topo, allocs, plans)
