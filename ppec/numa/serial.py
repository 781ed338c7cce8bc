"""Topologies and allocations as plain JSON-able dicts: how snapshots carry them."""

from __future__ import annotations

import json
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


# Topologies parsed so far, by their exact JSON. A fleet has a few hardware models, so
# 10,000 snapshots hold a handful of distinct topologies: each is parsed once, and the
# hosts share one immutable Topology (so ppec.numa.cells computes its layout once, too).
_PARSED: dict[str, Topology] = {}
_KEPT = 1024


def topology_from_dict(data: dict[str, Any]) -> Topology:
    try:
        text = topology_text(data)   # a twentieth of the cost of parsing it again
    except (TypeError, ValueError):   # not JSON-shaped (built in code): parse, keep nothing
        return _parse(data)
    return topology_from_text(text, data)


def topology_text(data: dict[str, Any]) -> str:
    """A topology dict as the compact JSON ``topology_from_text`` takes (and keys on)."""
    return json.dumps(data, separators=(",", ":"))


def topology_from_text(text: str, data: dict[str, Any] | None = None) -> Topology:
    """The topology in ``text`` (``data``: the same, already decoded)."""
    got = _PARSED.get(text)
    if got is None:
        got = _parse(json.loads(text) if data is None else data)
        if len(_PARSED) >= _KEPT:
            _PARSED.clear()
        _PARSED[text] = got
    return got


def _parse(data: dict[str, Any]) -> Topology:
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


_NO_CPUS: frozenset[int] = frozenset()


def allocation_from_dict(d: dict[str, Any]) -> Allocation:
    # A fleet-wide decision decodes every VM of every host (245,000 at 10,000 hosts):
    # map and one shared empty set (shared VMs hold no CPUs) halve the cost of generators.
    cpus = d["cpus"]
    return Allocation(str(d["vm"]), "dedicated" if d["policy"] == "dedicated" else "shared",
                      int(d["vcpus"]), frozenset(map(int, cpus)) if cpus else _NO_CPUS,
                      tuple([(int(c), int(m)) for c, m in d["memory"]]))
