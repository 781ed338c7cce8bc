"""Parsed host snapshots, cached by (host, taken_at): a snapshot is parsed once however
many pages, scrapes and host pages read it, and a page reads only its own hosts' rows.

The summary numbers come from ``ppec.placement``'s own ``Summary``, so the API, /metrics
and ``ppec capacity`` count free CPUs and memory the same way.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ppec.numa.fit import Allocation
from ppec.numa.serial import allocation_from_dict, topology_from_dict
from ppec.numa.topology import Topology
from ppec.operator.store import Store
from ppec.placement import HostSnapshot
from ppec.placement.model import Summary


@dataclass(frozen=True)
class Parsed:
    """What the HTTP side reads of one snapshot."""

    host: str
    taken_at: float
    info: dict[str, Any]            # the agent's scalar facts (cpu_percent, storage, …)
    topology: Topology
    allocations: tuple[Allocation, ...]
    summary: Summary
    vm_states: dict[str, str]       # VM name -> libvirt state when the snapshot was taken

    @property
    def storage_total(self) -> int:
        return int(self.info.get("storage_total_bytes") or 0)

    @property
    def storage_free(self) -> int:
        return int(self.info.get("storage_free_bytes") or 0)


def parse(host: str, taken_at: float, text: str) -> Parsed:
    data = json.loads(text)
    topology = topology_from_dict(data.get("topology") or {"cells": []})
    allocations = tuple(allocation_from_dict(a) for a in data.get("allocations", []))
    summary = HostSnapshot(name=host, topology=topology, allocations=allocations).summary
    info = {k: v for k, v in data.items() if not isinstance(v, dict | list)}
    states = {str(v.get("name")): str(v.get("state", "")) for v in data.get("vms", [])
              if isinstance(v, dict)}
    return Parsed(host, taken_at, info, topology, allocations, summary, states)


class SnapshotCache:
    """host -> Parsed, refreshed from the store only where ``taken_at`` moved."""

    def __init__(self) -> None:
        self._parsed: dict[str, Parsed] = {}
        self._lock = threading.Lock()

    def get(self, store: Store, stamps: dict[str, float]) -> dict[str, Parsed]:
        """The parsed snapshots of the hosts in ``stamps`` (host -> taken_at, as the caller
        just read them); rows whose stamp changed are read and parsed again."""
        have = self._parsed
        stale = [h for h, t in stamps.items() if (p := have.get(h)) is None or p.taken_at != t]
        if stale:
            fresh = self._load(store, stale)
            with self._lock:
                self._parsed.update(fresh)
                have = self._parsed
        return {h: have[h] for h in stamps if h in have}

    def forget_except(self, hosts: Iterable[str]) -> None:
        """Drop hosts no longer in the store (called by full scans, e.g. /metrics)."""
        keep = set(hosts)
        with self._lock:
            for gone in [h for h in self._parsed if h not in keep]:
                del self._parsed[gone]

    @staticmethod
    def _load(store: Store, hosts: list[str]) -> dict[str, Parsed]:
        out: dict[str, Parsed] = {}
        for start in range(0, len(hosts), 500):   # bounded IN (…) lists
            chunk = hosts[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = store.db.execute(f"SELECT host, taken_at, data FROM snapshots WHERE host "
                                    f"IN ({marks})", chunk).fetchall()
            for host, taken_at, text in rows:
                out[str(host)] = parse(str(host), float(taken_at), str(text))
        return out
