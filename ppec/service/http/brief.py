"""What the fleet-wide views read of a host's snapshot, from the store's compact part.

The host list (API and web UI), /metrics and the image catalogue read a few figures per
host: the placement summary, CPU percent, storage, the VM count by state, the NUMA nodes,
the images held. The writer stores those in the snapshot row's placement part
(operator/store/snaprows.py) beside the whole snapshot, so these views decode 1-2 KB a
host instead of 10-15 KB. At 10,000 hosts a service round replaces every row; parsing
the whole snapshots again (the warmer, 3 s of CPU a round) held the HTTP process's GIL
and was most of the API's p99 under 1,000 readers (docs/scale.md). Pages about one host
or its VMs (states, NICs, networks) still read the whole snapshot (snapcache.Parsed).

A row written before the part carried these fields is read whole, once, until its next
snapshot replaces it.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ppec.operator.store import Store
from ppec.operator.store.snaprows import rows_in
from ppec.placement.model import Summary
from ppec.service.http.snapcache import Node, Parsed, StampedCache, images_of, load_whole

log = logging.getLogger("ppec.service.http")

# The part's keys this module needs beyond placement's own (operator/store/snaprows.py).
_NEEDS = ("vm_states", "storage_total_bytes", "summary")
_INFO = ("cpu_percent", "storage_total_bytes", "storage_free_bytes", "agent_version")


@dataclass(frozen=True)
class Brief:
    host: str
    taken_at: float
    info: dict[str, Any]          # cpu_percent, storage, agent_version, vm_cpu_used/rss
    nodes: tuple[Node, ...]
    summary: Summary
    state_counts: dict[str, int]  # VMs by libvirt state at the snapshot
    images: tuple[tuple[str, int], ...] | None

    @property
    def storage_total(self) -> int:
        return int(self.info.get("storage_total_bytes") or 0)

    @property
    def storage_free(self) -> int:
        return int(self.info.get("storage_free_bytes") or 0)

    @property
    def vm_count(self) -> int:
        return sum(self.state_counts.values())


def from_part(host: str, taken_at: float, text: str, topology: str | None = None
              ) -> Brief | None:
    """From the placement part's JSON text and the topology column (``None``: in the part,
    as schema 12 kept it); None when the row predates the fields."""
    part = json.loads(text)
    topology = topology or part.get("topology_text")
    if topology is None or not all(k in part for k in _NEEDS):
        return None
    from ppec.numa.serial import topology_from_text
    topo = topology_from_text(topology)
    info = {k: part.get(k) for k in _INFO}
    use = part.get("vm_use") or {}
    info["vm_cpu_used"], info["vm_rss_mib"] = use.get("cpu_used"), use.get("rss_mib")
    numbers: list[Any] = [tuple(v) if isinstance(v, list) else v for v in part["summary"]]
    return Brief(host, taken_at, info, tuple(Node(c.id, c.memory_mib) for c in topo.cells),
                 Summary(*numbers), {sys.intern(str(k)): int(v)
                                     for k, v in part["vm_states"].items()},
                 images_of(part))


def from_parsed(p: Parsed) -> Brief:
    info = {k: p.info.get(k) for k in (*_INFO, "vm_cpu_used", "vm_rss_mib")}
    return Brief(p.host, p.taken_at, info, p.nodes, p.summary,
                 dict(Counter(p.vm_states.values())), p.images)


class Briefs(StampedCache[Brief]):
    """The fleet views' briefs (the host list, /metrics, the image catalogue)."""

    def _load(self, store: Store, hosts: list[str]) -> dict[str, Brief]:
        out: dict[str, Brief] = {}
        whole: list[str] = []
        for host, taken_at, text, topology in rows_in(
                store.db, "SELECT host, taken_at, placement, topology FROM snapshots "
                          "WHERE host IN ({})", hosts):
            got = from_part(str(host), float(taken_at), str(text), topology) if text else None
            if got is None:
                whole.append(str(host))
            else:
                out[str(host)] = got
        # Rows from before the part had these fields: read whole.
        out.update({h: from_parsed(p) for h, p in load_whole(store, whole).items()})
        return out


class Warmer:
    """Every ``interval`` seconds, read the fleet views' part (brief.py) of the snapshots
    that changed since the last look, so a scrape or a list page finds them read."""

    def __init__(self, cache: Briefs, store: Callable[[], Store],
                 interval: float = 1.0) -> None:
        self.cache, self._store, self.interval = cache, store, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ppec-http-warm", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def once(self) -> None:
        store = self._store()
        stamps = {str(h): float(t) for h, t in
                  store.db.execute("SELECT host, taken_at FROM snapshots").fetchall()}
        self.cache.get(store, stamps, every=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.once()
            except Exception:   # a bad round must not end the warming; say it, go on
                log.exception("refreshing the snapshot cache failed")
            self._stop.wait(self.interval)
