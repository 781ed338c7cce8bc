"""Placement invariants over random fleets and requests (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppec.numa import NoFit, fit
from ppec.numa import Request as NumaRequest
from ppec.placement import FleetIndex, HostSnapshot, Policy, Request, explain, place
from ppec.placement.filters import FILTERS, Context, check, place_one
from tests.placement.fleets import SHAPES, fill_randomly, topology

NOW = 1000.0


@st.composite
def fleets(draw: st.DrawFn) -> list[HostSnapshot]:
    n = draw(st.integers(1, 12))
    rng = __import__("random").Random(draw(st.integers(0, 10_000)))
    hosts = []
    for i in range(n):
        topo = topology(*draw(st.sampled_from(SHAPES)))
        hosts.append(HostSnapshot(
            name=f"h{i}", topology=topo, allocations=fill_randomly(topo, rng, draw(
                st.integers(0, 8))),
            region=draw(st.sampled_from(["", "eu", "us"])),
            rack=draw(st.sampled_from(["k1", "k2", "k3"])),
            power_domain=draw(st.sampled_from(["p1", "p2"])),
            vrf=draw(st.sampled_from(["", "blue"])),
            networks=draw(st.frozensets(st.sampled_from(["blue", "red"]))),
            images=draw(st.frozensets(st.sampled_from(["a" * 64, "b" * 64]))),
            tags=draw(st.frozensets(st.sampled_from(["ssd", "gpu"]))),
            drained=draw(st.booleans()) and draw(st.booleans()),
            reachable=not (draw(st.booleans()) and draw(st.booleans())),
            taken_at=NOW - draw(st.sampled_from([0, 10, 5000])),
            cost=draw(st.sampled_from([0.0, 1.0, 3.0])), power_idle_w=100, power_max_w=300,
            storage_free_bytes=draw(st.sampled_from([0, 1 << 30, 1 << 40]))))
    return hosts


@st.composite
def requests(draw: st.DrawFn) -> Request:
    vcpus = draw(st.integers(1, 12))
    mem = draw(st.sampled_from([256, 4096, 32768]))
    numa = draw(st.sampled_from([None, "dedicated"]))
    return Request(
        vcpus=vcpus, memory_mib=mem, disk_bytes=draw(st.sampled_from([0, 1 << 31])),
        numa=None if numa is None else NumaRequest(vcpus, mem, policy="dedicated",
                                                   numa_nodes=draw(st.sampled_from([None, 1]))),
        region=draw(st.sampled_from(["", "eu"])), vrf=draw(st.sampled_from(["", "blue"])),
        tags=draw(st.frozensets(st.sampled_from(["ssd", "gpu"]), max_size=1)),
        ha_group=draw(st.sampled_from(["", "g"])),
        spread=draw(st.sampled_from(["host", "rack", "power_domain"])),
        nic_vrfs=draw(st.frozensets(st.sampled_from(["red"]))),
        images=draw(st.frozensets(st.sampled_from(["a" * 64, "b" * 64]), max_size=2)),
        push_images=draw(st.booleans()))


def reason_is_true(h: HostSnapshot, rule: str, req: Request, taken: dict[str, str],
                   policy: Policy) -> bool:
    """Each rule re-derived from the snapshot, independently of the filter code."""
    s = h.summary
    if rule == "state":
        return h.drained or not h.reachable or NOW - h.taken_at > policy.stale_after
    if rule == "region":
        return bool(req.region) and h.region != req.region
    if rule == "vrf":
        return bool(req.vrf) and h.vrf != req.vrf
    if rule == "image":     # only when images are not pushed on create
        return not req.push_images and any(d not in h.images for d in req.images)
    if rule == "network":   # the host's own VRF (primary NIC) and every --nic VRF
        return any(v not in h.networks for v in [h.vrf, *req.nic_vrfs] if v)
    if rule == "tags":
        return not req.tags <= h.tags
    if rule == "resources":
        shared = req.numa is None
        return (req.memory_mib > s.memory_mib - s.used_mib
                or req.disk_bytes > h.storage_free_bytes or req.vcpus > s.cpus - s.dedicated
                or (shared and s.shared_vcpus + req.vcpus > h.overcommit * s.pool))
    if rule == "ha":
        return bool(req.ha_group) and h.spread_key(req.spread) in taken
    if rule == "numa":
        return isinstance(fit(h.topology, h.allocations, req.numa_request,
                              overcommit=h.overcommit), NoFit)
    raise AssertionError(rule)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), requests(), st.frozensets(st.sampled_from(["h0", "h1", "k1", "p1"])))
def test_decisions_are_sound(hosts: list[HostSnapshot], req: Request,
                             taken_keys: frozenset[str]) -> None:
    policy = Policy()
    taken = {k: "member" for k in taken_keys} if req.ha_group else {}
    index = FleetIndex(hosts)
    d = place(index, req, now=NOW, policy=policy, ha_taken=taken)
    ctx = Context(req, policy, NOW, taken, None)
    by_name = {h.name: h for h in hosts}
    for cand in d.ranked:                                  # the chosen pass every filter
        assert check(by_name[cand.host], ctx) is None
    for rej in d.rejected:                                  # every reason is true
        assert reason_is_true(by_name[rej.host], rej.rule, req, taken, policy), rej
    passing = {h.name for h in hosts if check(h, ctx) is None}
    if not d.ranked:
        assert passing == set()
        assert {r.host for r in d.rejected} == set(by_name)
    else:
        assert d.ranked[0].host in passing
    # The fast masks agree with the filters: exactly, except NUMA (a necessary condition).
    masks = index.masks(req, policy, NOW, taken, None)
    for i, h in enumerate(hosts):
        for rule, f in FILTERS:
            verdict = f(h, ctx)
            if rule == "numa":
                assert verdict is not None or masks[rule][i]
            else:
                assert (verdict is None) == bool(masks[rule][i]), (rule, h.name, verdict)
    rows = explain(index, req, now=NOW, policy=policy, ha_taken=taken)
    assert {r["host"] for r in rows if r["passed"]} == passing


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), requests(), st.frozensets(st.sampled_from(["h0", "k1", "p1"])),
       st.sampled_from([None, {"": 0, "blue": 3}, {"": 2, "blue": 0}]))
def test_one_host_decided_by_the_filters_is_what_place_decides(
        hosts: list[HostSnapshot], req: Request, taken_keys: frozenset[str],
        free_ips: dict[str, int] | None) -> None:
    """`vm create --host` decides without the index (and numpy): the same host ranked or
    the same rejection, word for word, as place() over an index of that one host."""
    h = hosts[0]
    taken = {k: "member" for k in taken_keys} if req.ha_group else {}
    want = place(FleetIndex([h]), req, now=NOW, ha_taken=taken, free_ips=free_ips)
    got = place_one(h, req, now=NOW, ha_taken=taken, free_ips=free_ips)
    assert [c.host for c in got.ranked] == [c.host for c in want.ranked]
    assert got.rejected == want.rejected and got.examined == want.examined


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), st.sampled_from(["host", "rack", "power_domain"]), st.integers(1, 15))
def test_ha_spread_never_shares_a_key(hosts: list[HostSnapshot], level: str,
                                      members: int) -> None:
    """Placing a group's members one after another: no two share a host/rack/domain."""
    index = FleetIndex(hosts)
    taken: dict[str, str] = {}
    for m in range(members):
        req = Request(vcpus=1, memory_mib=256, ha_group="g", spread=level)  # type: ignore[arg-type]
        d = place(index, req, now=NOW, ha_taken=taken)
        if d.host is None:
            assert all(r.rule != "ha" or h.spread_key(level) in taken  # type: ignore[arg-type]
                       for r in d.rejected for h in hosts if h.name == r.host)
            break
        key = index.hosts[index.pos[d.host]].spread_key(level)  # type: ignore[arg-type]
        assert key not in taken
        taken[key] = f"m{m}"
