"""A VM applied to a host snapshot carries its summary forward (``with_allocation``):
the same numbers ``Summary.of`` computes from every allocation, through any sequence of
dedicated and shared VMs the fit places."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppec.numa import NoFit, fit
from ppec.numa import Request as NumaRequest
from ppec.placement.model import HostSnapshot, Summary, with_allocation
from tests.numa.test_properties import topologies


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topologies(), st.lists(st.tuples(st.integers(1, 6), st.integers(1, 8),
                                        st.sampled_from(["dedicated", "shared"])),
                              min_size=1, max_size=25))
def test_the_carried_summary_is_the_computed_one(topo, vms) -> None:  # type: ignore[no-untyped-def]
    h = HostSnapshot(name="h", topology=topo)
    applied = 0
    for i, (vcpus, gib, policy) in enumerate(vms):
        req = NumaRequest(vcpus, gib * 256, policy=policy)
        plan = fit(h.topology, h.allocations, req, overcommit=4.0)
        if isinstance(plan, NoFit):
            continue
        h = with_allocation(h, plan.allocation(f"v{i}", vcpus, gib * 256))
        applied += 1
        fresh = HostSnapshot(name="h", topology=topo, allocations=h.allocations)
        assert h.summary == Summary.of(fresh)
