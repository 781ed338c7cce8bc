"""Capacity reports over the latest snapshots: resources per group, and how many more of
one shape fit (exactly, NUMA-aware), and where."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ppec.core.errors import BadInput
from ppec.operator import snapshots
from ppec.operator.choose import Ask
from ppec.operator.context import Context
from ppec.operator.store import Host, pages
from ppec.placement.model import Spread

if TYPE_CHECKING:
    from ppec.placement import HostSnapshot
    from ppec.placement.headroom import HostCapacity

GROUPINGS = ("region", "rack", "host", "numa")
Group = dict[str, Any]


def _zero() -> Group:
    return {"hosts": 0, "cpus": 0, "dedicated": 0, "shared_vcpus": 0, "free_cpus": 0,
            "memory_mib": 0, "free_mib": 0, "storage_free_bytes": 0, "cpu_percent": 0.0,
            "vm_use_hosts": 0, "vm_use_cpus": 0, "vm_cpu_used": 0.0, "vm_rss_mib": 0}


def _use_figures(g: Group) -> None:
    """What the VMs use, measured (host snapshots' ``vm_use``), beside what they hold:
    CPUs' worth used and its percent of the CPUs of the hosts that measured it, RSS.
    None where no host of the group measured (snapshots from older agents)."""
    if not g["vm_use_hosts"]:
        g["vm_cpu_used"] = g["vm_rss_mib"] = g["vm_cpu_percent"] = None
        return
    g["vm_cpu_used"] = round(g["vm_cpu_used"], 2)
    g["vm_cpu_percent"] = round(g["vm_cpu_used"] / max(g["vm_use_cpus"], 1) * 100, 1)


def report(ctx: Context, *, by: str = "host", ask: Ask | None = None,
           spread: Spread | None = None, refresh: bool = False,
           want_max: bool = False) -> dict[str, Any]:
    from ppec.placement.headroom import fleet_capacity, largest
    if by not in GROUPINGS:
        raise BadInput(f"--by must be one of {', '.join(GROUPINGS)}, not {by!r}")
    hosts = ctx.store.hosts()
    data = snapshots.refresh(ctx, hosts) if refresh else snapshots.for_placement(ctx)
    snaps = [snapshots.to_placement(h, data.get(h.name)) for h in hosts]
    policy = ctx.config.placement_policy()
    now = time.time()
    caps: dict[str, HostCapacity] = {}
    if ask is not None:
        caps = {c.host: c for c in fleet_capacity(snaps, ask.request(), now=now, policy=policy,
                                                  spread=spread)}
    groups: dict[str, Group] = {}
    excluded = []
    changed = pages.vm_changes(ctx.store)
    for inv, snap in zip(hosts, snaps, strict=True):
        state, _age = snapshots.freshness(data.get(inv.name), now, policy.stale_after,
                                          changed.get(inv.name))
        if inv.drained or state != "fresh":
            excluded.append({"host": inv.name, "reason": "drained" if inv.drained else
                             _not_fresh(state, changed.get(inv.name))})
        elif by == "numa":
            _add_nodes(groups, inv, snap, caps.get(inv.name))
        else:
            _add_host(groups, by, inv, snap, data.get(inv.name) or {}, caps.get(inv.name))
    rows = _finish(groups, by)
    total = _total(rows, by, ask)
    for g in [*rows, total]:
        _use_figures(g)
    doc: dict[str, Any] = {"by": by, "groups": rows, "total": total,
                           "excluded": excluded, "shape": _shape(ask, spread)}
    if want_max:
        out = {e["host"] for e in excluded}
        fresh = [s for s, inv in zip(snaps, hosts, strict=True) if inv.name not in out]
        doc["largest"] = {"dedicated": largest(fresh, dedicated=True, now=now, policy=policy),
                          "shared": largest(fresh, dedicated=False, now=now, policy=policy)}
    return doc


def _add_nodes(groups: dict[str, Group], inv: Host, snap: HostSnapshot,
               cap: HostCapacity | None) -> None:
    """``--by numa``: one group per NUMA node, and one for what fits shared."""
    s = snap.summary
    for i, cell in enumerate(snap.topology.cells):
        name = f"{inv.name}/node{cell.id}"
        g = groups.setdefault(name, {"group": name, **_zero()})
        usable = {c.id for c in cell.cpus} - snap.topology.reserved
        g["hosts"] = 1
        g["cpus"] += len(usable)
        g["free_cpus"] += s.node_free_cpus[i]
        g["dedicated"] += len(usable) - s.node_free_cpus[i]
        g["memory_mib"] += cell.memory_mib
        g["free_mib"] += s.node_free_mib[i]
        if cap is not None:
            g["fits"] = g.get("fits", 0) + cap.per_node.get(cell.id, 0)
    if cap is not None and cap.per_node.get(-1):
        name = f"{inv.name}/shared"
        g = groups.setdefault(name, {"group": name, **_zero()})
        g["fits"] = g.get("fits", 0) + cap.per_node[-1]


def _add_host(groups: dict[str, Group], by: str, inv: Host, snap: HostSnapshot,
              data: dict[str, Any], cap: HostCapacity | None) -> None:
    key = {"region": inv.region, "rack": inv.rack, "host": inv.name}[by] or "(none)"
    s = snap.summary
    g = groups.setdefault(key, {"group": key, **_zero()})
    g["hosts"] += 1
    g["cpus"] += s.cpus
    g["dedicated"] += s.dedicated
    g["shared_vcpus"] += s.shared_vcpus
    g["free_cpus"] += s.pool
    g["memory_mib"] += s.memory_mib
    g["free_mib"] += s.free_mib
    g["storage_free_bytes"] += snap.storage_free_bytes
    g["cpu_percent"] += float(data.get("cpu_percent") or 0.0)
    if snap.vm_cpu_used is not None:
        g["vm_use_hosts"] += 1
        g["vm_use_cpus"] += s.cpus
        g["vm_cpu_used"] += snap.vm_cpu_used
        g["vm_rss_mib"] += snap.vm_rss_mib or 0
    if cap is not None:
        g["fits"] = g.get("fits", 0) + cap.fits
        if cap.fits:
            g.setdefault("where", []).append({"host": inv.name, "fits": cap.fits})


def _finish(groups: dict[str, Group], by: str) -> list[Group]:
    rows = sorted(groups.values(), key=lambda g: str(g["group"]))
    for g in rows:
        if by != "numa" and g["hosts"]:
            g["cpu_percent"] = round(g["cpu_percent"] / g["hosts"], 1)
        if "where" in g:
            g["where"] = sorted(g["where"], key=lambda w: (-w["fits"], w["host"]))
    return rows


def _total(rows: list[Group], by: str, ask: Ask | None) -> Group:
    total = _zero()
    for g in rows:
        for k in total:
            total[k] += g.get(k) or 0
    if by == "numa":
        total["hosts"] = len({str(g["group"]).split("/")[0] for g in rows})
    if ask is not None:
        total["fits"] = sum(g.get("fits", 0) for g in rows)
    total["cpu_percent"] = round(total["cpu_percent"] / max(len(rows), 1), 1)
    return total


def _shape(ask: Ask | None, spread: Spread | None) -> dict[str, Any] | None:
    if ask is None:
        return None
    s = ask.shape
    return {"vcpus": s.vcpus, "memory_mib": s.memory_mib, "disk_bytes": s.disk_bytes,
            "numa": s.pinning.policy, "threads": s.pinning.threads, "spread": spread}


def _not_fresh(state: str, changed_at: float | None) -> str:
    if state == "none":
        return "no snapshot"
    if state == "changed" and changed_at is not None:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(changed_at))
        return f"snapshot changed (taken before a VM change at {at}; `ppec sync` it)"
    return f"snapshot {state}"
