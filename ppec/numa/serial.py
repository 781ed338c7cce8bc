"""Topologies and allocations as plain JSON-able dicts: how snapshots carry them."""

from __future__ import annotations

from typing import Any

from ppec.numa.fit import Allocation
from ppec.numa.topology import Cell, Cpu, Topology


def topology_to_dict(topo: Topology) -> dict[str, Any]:
    return {
        "cells": [{"id": c.id, "memory_mib": c.memory_mib,
                   "cpus": [[p.id, p.socket, p.core, sorted(p.siblings)] for p in c.cpus],
                   "hugepages": [list(h) for h in c.hugepages]} for c in topo.cells],
        "reserved": sorted(topo.reserved),
    }


def topology_from_dict(data: dict[str, Any]) -> Topology:
    cells = tuple(
        Cell(int(c["id"]), int(c["memory_mib"]),
             tuple(Cpu(int(i), int(s), int(k), frozenset(int(x) for x in sib))
                   for i, s, k, sib in c["cpus"]),
             tuple((int(a), int(b)) for a, b in c.get("hugepages", [])))
        for c in data["cells"])
    return Topology(cells, frozenset(int(x) for x in data.get("reserved", [])))


def allocation_to_dict(a: Allocation) -> dict[str, Any]:
    return {"vm": a.vm, "policy": a.policy, "vcpus": a.vcpus, "cpus": sorted(a.cpus),
            "memory": [list(m) for m in a.memory]}


def allocation_from_dict(d: dict[str, Any]) -> Allocation:
    return Allocation(str(d["vm"]), "dedicated" if d["policy"] == "dedicated" else "shared",
                      int(d["vcpus"]), frozenset(int(c) for c in d["cpus"]),
                      tuple((int(c), int(m)) for c, m in d["memory"]))
