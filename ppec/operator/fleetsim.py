"""A fleet as placement sees it, with planned moves already counted: what an evacuation
or a rebalancing plan decides each next move on. Moving a VM takes its allocation off
the source's snapshot and puts on the target's what its agent's NUMA fit will give it
there (and its disk bytes), and moves its HA group's member to the target's spread key."""

from __future__ import annotations

import dataclasses
from typing import Any

from ppec.operator import choose


def allocation(snap: Any, name: str, ask: choose.Ask) -> Any:
    """What the VM will hold on ``snap``'s host, as its agent's fit will give it."""
    from ppec import numa
    s, p = ask.shape, ask.shape.pinning
    if p.policy == "shared":
        return numa.Allocation(name, "shared", s.vcpus, frozenset(), ((-1, s.memory_mib),))
    found = numa.fit(snap.topology, snap.allocations, numa.Request(
        s.vcpus, s.memory_mib, policy="dedicated", numa_nodes=p.nodes or None,
        threads=p.threads, emulator=p.emulator), overcommit=snap.overcommit)
    if not isinstance(found, numa.Plan):   # placement's NUMA filter let it through
        raise ValueError(f"{name} does not fit {snap.name}: {found}")
    return found.allocation(name, s.vcpus, s.memory_mib)


def with_move(fleet: choose.Fleet, name: str, target: str, ask: choose.Ask) -> choose.Fleet:
    """``fleet`` after ``name`` moved to ``target`` (from wherever its snapshot has it)."""
    snaps = []
    for snap in fleet.hosts:
        if any(a.vm == name for a in snap.allocations):
            snap = dataclasses.replace(
                snap, allocations=tuple(a for a in snap.allocations if a.vm != name),
                storage_free_bytes=snap.storage_free_bytes + ask.shape.disk_bytes)
        if snap.name == target:
            snap = dataclasses.replace(
                snap, allocations=(*snap.allocations, allocation(snap, name, ask)),
                storage_free_bytes=max(snap.storage_free_bytes - ask.shape.disk_bytes, 0))
        snaps.append(snap)
    members = dict(fleet.members)
    if ask.ha_group:
        snap = next(s for s in snaps if s.name == target)
        members[ask.ha_group] = [*(m for m in members.get(ask.ha_group, []) if m[0] != name),
                                 (name, target, snap.spread_key(ask.spread))]
    return choose.Fleet(snaps, members, fleet.spreads, fleet.free_ips)


def without_member(fleet: choose.Fleet, name: str, group: str) -> choose.Fleet:
    """``fleet`` for deciding where ``name`` goes: its own place in its HA group given up
    (it is the one moving). A copy: until the move is planned, the member still holds its
    key (a VM an evacuation cannot place stays where it is)."""
    if not group:
        return fleet
    return dataclasses.replace(fleet, members={
        **fleet.members, group: [m for m in fleet.members.get(group, []) if m[0] != name]})
