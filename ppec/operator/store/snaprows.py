"""Stored host snapshots: each row keeps the whole snapshot and, beside it, the part
placement reads.

A snapshot is about 15 KB of JSON on a host with 30 VMs, most of it the VM list; placement
and capacity read its topology, allocations and a few figures, about 2 KB. At 10,000
hosts, decoding whole snapshots was 3-4 s of every ``vm create``, ``place`` and
``capacity`` (docs/scale.md), so every writer stores the placement part too, and those
readers decode only it. A row written before that column existed has none: its whole
snapshot is read instead, until the next snapshot of that host replaces it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ppec.operator.store.backends import Connection
    from ppec.operator.store.tables import Store

# What snapshots.to_placement and the capacity report read of a snapshot (its time of
# record is the row's taken_at column). The topology is kept as its JSON text, under
# ``topology_text``: few distinct ones exist in a fleet, and ppec.numa.serial finds an
# already parsed one by that text without decoding it.
PLACEMENT_KEYS = ("allocations", "cpu_overcommit", "storage_free_bytes", "cpu_percent")
USE_KEYS = ("cpu_used", "rss_mib")    # of vm_use, whose per-VM figures placement ignores

_UPSERT = ("INSERT INTO snapshots (host, taken_at, data, placement) VALUES (?, ?, ?, ?) "
           "ON CONFLICT(host) DO UPDATE SET taken_at=excluded.taken_at, data=excluded.data, "
           "placement=excluded.placement")

# Hosts per query when reading some hosts' rows: far below any backend's bound on
# parameters (SQLite's default is 32766, PostgreSQL's 65535).
IN_BATCH = 500


def save(db: Connection, host: str, taken_at: float, data: dict[str, Any]) -> None:
    """Store (or replace) ``host``'s snapshot, in the caller's transaction."""
    from ppec.numa.serial import topology_text  # not for the store's readers
    part = {k: data[k] for k in PLACEMENT_KEYS if k in data}
    if isinstance(data.get("topology"), dict):
        part["topology_text"] = topology_text(data["topology"])
    if isinstance(data.get("vm_use"), dict):
        part["vm_use"] = {k: data["vm_use"].get(k) for k in USE_KEYS}
    db.execute(_UPSERT, (host, taken_at, json.dumps(data), json.dumps(part)))


def placement_views(store: Store, hosts: Sequence[str] | None = None
                    ) -> dict[str, dict[str, Any]]:
    """host -> the placement part of its stored snapshot, with the row's ``taken_at`` (the
    time of record); for ``hosts`` only, or every stored one (None)."""
    return _read(store, "COALESCE(placement, data)", hosts)


def whole(store: Store, hosts: Sequence[str]) -> dict[str, dict[str, Any]]:
    """host -> its whole stored snapshot, with the row's ``taken_at``; these hosts only."""
    return _read(store, "data", hosts)


def _read(store: Store, column: str, hosts: Sequence[str] | None
          ) -> dict[str, dict[str, Any]]:
    sql = f"SELECT host, taken_at, {column} FROM snapshots"
    if hosts is None:
        return _decoded(store.db.execute(sql).fetchall())
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(hosts), IN_BATCH):
        batch = list(hosts[i:i + IN_BATCH])
        out.update(_decoded(store.db.execute(
            f"{sql} WHERE host IN ({','.join('?' * len(batch))})", batch).fetchall()))
    return out


def _decoded(rows: list[Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for host, taken, text in rows:
        view = json.loads(text)
        view["taken_at"] = float(taken)
        out[str(host)] = view
    return out
