"""Parsed host snapshots, cached by (host, taken_at): a snapshot is parsed once however
many pages, scrapes and host pages read it, and a page reads only its own hosts' rows.

Parsing is the cost at fleet size (a 10,000-host round changes every row), so a parse
keeps only what pages and /metrics read: the agent's scalar facts, each VM's state and
the live part of its NICs, the host's networks and images, and a ``ppec.placement`` ``Summary``
counted straight from the JSON (the same rules as ``Summary.of``; tests hold them equal).
The full NUMA ``Topology`` is built only for the host page that draws it. ``Warmer`` keeps
the cache current from a background thread, so a scrape finds it parsed.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, Protocol, TypeVar

from ppec.numa.fit import Allocation
from ppec.numa.serial import allocation_from_dict, topology_from_dict
from ppec.numa.topology import Topology
from ppec.operator.store import Store
from ppec.operator.store.snaprows import rows_in
from ppec.placement.model import Summary

log = logging.getLogger("ppec.service.http")


@dataclass(frozen=True)
class Node:
    id: int
    memory_mib: int


@dataclass(frozen=True, slots=True)
class LiveNic:
    """What a host's snapshot says of one VM NIC now (the VM's document says the rest).
    Slots and interned names: the warmer keeps every host's NICs, so each costs little."""

    mac: str            # lower case, as the VM document's
    network: str        # the agent's network name for the NIC's VRF
    bridge: str         # the Linux bridge or macvtap device
    model: str
    queues: int
    target: str         # the tap device while the VM runs, else ""


@dataclass(frozen=True, slots=True)
class Network:
    """One of the agent's configured networks, as the host's snapshot found it."""

    name: str
    kind: str           # bridge | macvtap
    source: str
    mtu: int | None     # configured
    present: bool
    up: bool
    device_mtu: int | None   # what the device has, None when it is absent


@dataclass(frozen=True)
class Parsed:
    """What the HTTP side reads of one snapshot."""

    host: str
    taken_at: float
    info: dict[str, Any]            # the agent's scalar facts (cpu_percent, storage, …)
    nodes: tuple[Node, ...]
    summary: Summary
    vm_states: dict[str, str]       # VM name -> libvirt state when the snapshot was taken
    raw_topology: dict[str, Any] = field(repr=False)
    raw_allocations: list[dict[str, Any]] = field(repr=False)
    # VM name -> its NICs' live part; only VMs that have NICs (older agents: none)
    vm_nics: dict[str, tuple[LiveNic, ...]] = field(default_factory=dict, repr=False)
    networks: tuple[Network, ...] = ()
    # (digest, size) of each base image the host holds; None from an agent older than
    # the image catalogue (issue 25), whose snapshot has no list
    images: tuple[tuple[str, int], ...] | None = None

    @property
    def storage_total(self) -> int:
        return int(self.info.get("storage_total_bytes") or 0)

    @property
    def vm_count(self) -> int:
        return len(self.vm_states)

    @property
    def storage_free(self) -> int:
        return int(self.info.get("storage_free_bytes") or 0)

    @cached_property
    def topology(self) -> Topology:
        return topology_from_dict(self.raw_topology)

    @cached_property
    def allocations(self) -> tuple[Allocation, ...]:
        return tuple(allocation_from_dict(a) for a in self.raw_allocations)


def summary_of(topology: dict[str, Any], allocations: list[dict[str, Any]]) -> Summary:
    """``Summary.of`` over the snapshot's JSON, without building Cpu and Cell objects."""
    reserved = {int(x) for x in topology.get("reserved", [])}
    held = {int(c) for a in allocations for c in a["cpus"]}
    usable: set[int] = set()
    free_cpus, free_mib, memory = [], [], 0
    for cell in topology["cells"]:
        ids = {int(c[0]) for c in cell["cpus"]} - reserved
        usable |= ids
        free_cpus.append(len(ids - held))
        bound = sum(int(m) for a in allocations for c, m in a["memory"] if int(c) == cell["id"])
        free_mib.append(int(cell["memory_mib"]) - bound)
        memory += int(cell["memory_mib"])
    return Summary(cpus=len(usable), dedicated=len(held & usable),
                   shared_vcpus=sum(int(a["vcpus"]) for a in allocations
                                    if a["policy"] != "dedicated"),
                   memory_mib=memory,
                   used_mib=sum(int(m) for a in allocations for _, m in a["memory"]),
                   node_free_cpus=tuple(free_cpus), node_free_mib=tuple(free_mib),
                   vms=len(allocations))


def _word(value: Any) -> str:
    # Bridge, network and model names repeat across a fleet's VMs: one copy each.
    return sys.intern(str(value or ""))


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def live_nics(view: dict[str, Any]) -> tuple[LiveNic, ...]:
    """The live part of a snapshot VM view's ``nics`` (absent from older agents)."""
    return tuple(LiveNic(str(n.get("mac") or "").lower(), _word(n.get("network")),
                         _word(n.get("bridge")), _word(n.get("model")),
                         int(n.get("queues") or 0), str(n.get("target") or ""))
                 for n in view.get("nics") or () if isinstance(n, dict))


def networks_of(data: dict[str, Any]) -> tuple[Network, ...]:
    """The snapshot's ``networks`` (absent from older agents: none)."""
    return tuple(Network(_word(n.get("name")), _word(n.get("kind")), _word(n.get("source")),
                         _int_or_none(n.get("mtu")), bool(n.get("present")),
                         bool(n.get("up")), _int_or_none(n.get("device_mtu")))
                 for n in data.get("networks") or () if isinstance(n, dict))


def images_of(data: dict[str, Any]) -> tuple[tuple[str, int], ...] | None:
    """The snapshot's ``images`` (absent from older agents: None)."""
    found = data.get("images")
    if not isinstance(found, list):
        return None
    return tuple((sys.intern(str(i.get("digest") or "")), int(i.get("size") or 0))
                 for i in found if isinstance(i, dict))


def parse(host: str, taken_at: float, text: str) -> Parsed:
    data = json.loads(text)
    topology = data.get("topology") or {"cells": []}
    allocations = list(data.get("allocations") or [])
    info = {k: v for k, v in data.items() if not isinstance(v, dict | list)}
    use = data.get("vm_use") or {}      # measured VM use; absent from older agents
    info["vm_cpu_used"], info["vm_rss_mib"] = use.get("cpu_used"), use.get("rss_mib")
    views = [v for v in data.get("vms", []) if isinstance(v, dict)]
    states = {str(v.get("name")): str(v.get("state", "")) for v in views}
    nics = {str(v.get("name")): found for v in views if (found := live_nics(v))}
    nodes = tuple(Node(int(c["id"]), int(c["memory_mib"])) for c in topology["cells"])
    return Parsed(host, taken_at, info, nodes, summary_of(topology, allocations), states,
                  topology, allocations, nics, networks_of(data), images_of(data))


class Stamped(Protocol):
    @property
    def taken_at(self) -> float: ...


T = TypeVar("T", bound=Stamped)


class StampedCache(Generic[T]):
    """host -> what ``_load`` makes of its snapshot row, read again only where the row's
    ``taken_at`` moved."""

    def __init__(self) -> None:
        self._kept: dict[str, T] = {}
        self._lock = threading.Lock()

    def get(self, store: Store, stamps: dict[str, float], *, every: bool = False
            ) -> dict[str, T]:
        """The hosts in ``stamps`` (host -> taken_at, as the caller just read them); with
        ``every``, ``stamps`` is the whole fleet and hosts gone from it are dropped."""
        have = self._kept
        stale = [h for h, t in stamps.items() if (p := have.get(h)) is None or p.taken_at != t]
        if stale:
            fresh = self._load(store, stale)
            with self._lock:
                self._kept.update(fresh)
                if every:
                    for gone in [h for h in self._kept if h not in stamps]:
                        del self._kept[gone]
                have = self._kept
        return {h: have[h] for h in stamps if h in have}

    def _load(self, store: Store, hosts: list[str]) -> dict[str, T]:
        raise NotImplementedError


class SnapshotCache(StampedCache[Parsed]):
    """Whole snapshots, parsed: one host's page, the VM pages."""

    def _load(self, store: Store, hosts: list[str]) -> dict[str, Parsed]:
        return load_whole(store, hosts)


def load_whole(store: Store, hosts: list[str]) -> dict[str, Parsed]:
    """These hosts' whole snapshots, parsed."""
    rows = rows_in(store.db, "SELECT host, taken_at, data FROM snapshots WHERE host IN ({})",
                   hosts)
    return {str(h): parse(str(h), float(t), str(text)) for h, t, text in rows}
