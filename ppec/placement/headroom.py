"""How many more VMs of one shape fit, exactly, by the same rules placement uses.

Each host is filled with the shape one VM after another through ``ppec.numa.fit`` (so NUMA
nodes, SMT policies, reserved CPUs and shared overcommit all count), capped by its storage.
Hosts the placement filters would reject (drained, stale, unreachable, other region, VRF or
tags) count zero. With an HA spread level, at most one VM per host, rack or power domain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import groupby

from ppec.numa import Allocation, NoFit, Plan, counted, fit
from ppec.placement.filters import FILTERS, Context
from ppec.placement.model import HostSnapshot, Policy, Request, Spread, free_counts

LIMIT = 100_000   # a bound on one host's count, against a shape of zero size


@dataclass(frozen=True)
class HostCapacity:
    host: str
    eligible: bool
    reason: str                        # why not eligible
    fits: int
    per_node: dict[int, int] = field(default_factory=dict)   # -1: shared (no node)


def _eligible(h: HostSnapshot, ctx: Context) -> str:
    for rule, f in FILTERS:
        if rule in ("state", "region", "vrf", "tags"):
            why = f(h, ctx)
            if why is not None:
                return f"[{rule}] {why}"
    return ""


def host_capacity(h: HostSnapshot, req: Request, ctx: Context) -> HostCapacity:
    why = _eligible(h, ctx)
    if why:
        return HostCapacity(h.name, False, why, 0)
    cap = LIMIT
    if req.disk_bytes:
        cap = min(cap, h.storage_free_bytes // req.disk_bytes)
    if counted.applies(req.numa_request):
        return _counted_fill(h, req, cap)
    allocs: list[Allocation] = list(h.allocations)
    per_node: dict[int, int] = {}
    count = 0
    while count < cap:
        plan = fit(h.topology, allocs, req.numa_request, overcommit=h.overcommit)
        if isinstance(plan, NoFit):
            break
        allocs.append(plan.allocation(f"~{count}", req.vcpus, req.memory_mib))
        node = _first_node(plan)
        per_node[node] = per_node.get(node, 0) + 1
        count += 1
    return HostCapacity(h.name, True, "", count, per_node)


def _counted_fill(h: HostSnapshot, req: Request, cap: int) -> HostCapacity:
    """The same fill on the host's counts (ppec.numa.counted decides as fit does, for
    these requests): no allocation decoded, no CPU set built, per VM a few additions."""
    free = free_counts(h)
    numa_req = req.numa_request
    per_node: dict[int, int] = {}
    count = 0
    while count < cap:
        parts = counted.verdict(free, numa_req, h.overcommit)
        if isinstance(parts, NoFit):
            break
        free.take(numa_req, parts)
        node = free.cell_ids[parts[0][0]] if parts else -1
        per_node[node] = per_node.get(node, 0) + 1
        count += 1
    return HostCapacity(h.name, True, "", count, per_node)


def _first_node(plan: Plan) -> int:
    return plan.cells[0].host_cell if plan.cells else -1


def fleet_capacity(hosts: list[HostSnapshot], req: Request, *, now: float,
                   policy: Policy | None = None, spread: Spread | None = None
                   ) -> list[HostCapacity]:
    """Per host; with ``spread``, one VM per spread key (on its host with the most room)."""
    ctx = Context(req, policy or Policy(), now, {}, None)
    caps = [host_capacity(h, req, ctx) for h in hosts]
    if spread is None:
        return caps
    by_name = {h.name: h for h in hosts}
    keep: set[str] = set()
    ordered = sorted(caps, key=lambda c: by_name[c.host].spread_key(spread))
    for _, group in groupby(ordered, key=lambda c: by_name[c.host].spread_key(spread)):
        best = max(group, key=lambda c: (c.fits, c.host))
        if best.fits:
            keep.add(best.host)
    return [HostCapacity(c.host, c.eligible, c.reason, 1 if c.host in keep else 0,
                         {_node_of(c): 1} if c.host in keep else {}) for c in caps]


def _node_of(c: HostCapacity) -> int:
    return min(c.per_node) if c.per_node else -1


def largest(hosts: list[HostSnapshot], *, dedicated: bool, now: float,
            policy: Policy | None = None) -> dict[str, object]:
    """The largest single VM that still fits anywhere: most vCPUs, then most memory."""
    from ppec.numa import Request as NumaRequest
    best: dict[str, object] = {"host": None, "vcpus": 0, "memory_mib": 0}
    ctx = Context(Request(vcpus=1, memory_mib=1), policy or Policy(), now, {}, None)
    for h in hosts:
        if _eligible(h, ctx):
            continue
        s = h.summary

        def ok(v: int, m: int, h: HostSnapshot = h) -> bool:
            r = NumaRequest(v, m, policy="dedicated" if dedicated else "shared")
            return not isinstance(fit(h.topology, h.allocations, r, overcommit=h.overcommit),
                                  NoFit)
        v = max(s.pool, 0)
        while v > 0 and not ok(v, 1):
            v -= 1
        if v == 0:
            continue
        lo, hi = 1, max(s.free_mib, 1)
        while lo < hi:                   # most memory that still fits with v vCPUs
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if ok(v, mid) else (lo, mid - 1)
        if (v, lo) > (int(best["vcpus"]), int(best["memory_mib"])):  # type: ignore[call-overload]
            best = {"host": h.name, "vcpus": v, "memory_mib": lo}
    return best
