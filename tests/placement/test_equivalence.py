"""The fast path (cached per-request arrays, updated row by row; cached exact NUMA checks;
the best hosts found without a full sort) decides exactly what the old path decided: the
same ranking with the same scores, weights and notes, the same rejections, the same count
examined, after every update. The oracle: tests/placement/reference_place.py."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppec.numa import NoFit, fit
from ppec.numa import Request as NumaRequest
from ppec.placement import FleetIndex, HostSnapshot, Policy, Request, Weights, explain, place
from tests.placement import reference_place as old
from tests.placement.fleets import fleet, with_allocations
from tests.placement.test_properties import NOW, fleets, requests

POLICIES = [Policy(), Policy(strategy="spread"), Policy(max_candidates=1),
            Policy(weights=Weights(cost=0.0, power=0.0, numa=3.0)),
            Policy(stale_after=50.0, max_candidates=5)]


def _step(new: FleetIndex, ref: old.FleetIndex, req: Request, policy: Policy, now: float,
          taken: dict[str, str], count: dict[str, int], ips: dict[str, int] | None,
          tag: str) -> str | None:
    """One decision on both indexes, compared; the chosen host takes the VM in both."""
    got = place(new, req, now=now, policy=policy, ha_taken=taken, group_count=count,
                free_ips=ips)
    want = old.place(ref, req, now=now, policy=policy, ha_taken=taken, group_count=count,
                     free_ips=ips)
    assert got == want, (req, policy)
    if got.host is None:
        return None
    h = new.hosts[new.pos[got.host]]
    assert h is ref.hosts[ref.pos[got.host]]
    plan = fit(h.topology, h.allocations, req.numa_request, overcommit=h.overcommit)
    assert not isinstance(plan, NoFit)
    moved = with_allocations(h, [plan.allocation(tag, req.vcpus, req.memory_mib)])
    new.update(moved)
    ref.update(moved)
    return got.host


def _compare_explain(new: FleetIndex, ref: old.FleetIndex, req: Request, policy: Policy,
                     taken: dict[str, str]) -> None:
    assert explain(new, req, now=NOW, policy=policy, ha_taken=taken) == \
        old.explain(ref, req, now=NOW, policy=policy, ha_taken=taken)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), st.lists(st.tuples(requests(), st.sampled_from(POLICIES),
                                    st.sampled_from([NOW, NOW + 60]), st.booleans(),
                                    st.integers(0, 11)), min_size=1, max_size=12),
       st.sampled_from([None, {"": 1, "blue": 0}, {"": 0, "blue": 3}]))
def test_fast_path_decides_as_the_old_path(
        hosts: list[HostSnapshot],
        ops: list[tuple[Request, Policy, float, bool, int]],
        ips: dict[str, int] | None) -> None:
    new, ref = FleetIndex(hosts), old.FleetIndex(hosts)
    taken: dict[str, str] = {}
    count: dict[str, int] = {}
    for i, (req, policy, now, drain, victim) in enumerate(ops):
        if drain:   # an update that changes a mask, not only the resources
            h = new.hosts[victim % len(hosts)]
            changed = replace(h, drained=not h.drained, taken_at=h.taken_at - 1)
            new.update(changed)
            ref.update(changed)
        chosen = _step(new, ref, req, policy, now, taken if req.ha_group else {},
                       count if req.ha_group else {}, ips, f"vm{i}")
        if chosen is not None and req.ha_group:
            h = new.hosts[new.pos[chosen]]
            taken[h.spread_key(req.spread)] = f"vm{i}"
            count[chosen] = count.get(chosen, 0) + 1
        if i % 4 == 0:
            _compare_explain(new, ref, req, policy, taken if req.ha_group else {})


def test_sequential_placements_on_a_larger_fleet() -> None:
    """The benchmark's loop on 300 hosts, mixed shapes, until hosts run full."""
    hosts = fleet(300, seed=5, now=NOW)
    new, ref = FleetIndex(hosts), old.FleetIndex(hosts)
    rng = random.Random(5)
    placed = 0
    for i in range(400):
        v = rng.choice([1, 2, 4, 8])
        mem = v * rng.choice([1024, 2048, 8192])
        numa = rng.choice([None, NumaRequest(v, mem, policy="dedicated"),
                           NumaRequest(v, mem, policy="dedicated", numa_nodes=1)])
        req = Request(vcpus=v, memory_mib=mem, numa=numa,
                      region=rng.choice(["", "", "r1"]),
                      tags=rng.choice([frozenset(), frozenset({"ssd"})]))
        if _step(new, ref, req, rng.choice(POLICIES), NOW, {}, {}, None, f"s{i}"):
            placed += 1
    assert placed > 300


def test_a_fleet_whose_every_host_is_unreachable_is_refused_with_reasons() -> None:
    """No host has a NUMA node to weigh: every host rejected with its reason, no crash
    (ppec vm create with every agent down exits 3)."""
    from ppec.numa.topology import Topology
    from ppec.placement import FleetIndex, HostSnapshot, Request, place
    hosts = [HostSnapshot(name=f"h{i}", region="", rack="", power_domain="", vrf="",
                          tags=frozenset(), drained=False, cost=0, power_idle_w=0,
                          power_max_w=0, topology=Topology(()), reachable=False,
                          error="agent not running") for i in range(3)]
    for numa in (None, "dedicated"):
        from ppec.numa import Request as NumaRequest
        req = Request(vcpus=1, memory_mib=256, numa=None if numa is None else
                      NumaRequest(1, 256, policy="dedicated"))
        d = place(FleetIndex(hosts), req, now=0)
        assert d.host is None and len(d.rejected) == 3
