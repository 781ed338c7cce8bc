"""Stored host snapshots: each row keeps the whole snapshot and, beside it, the part
placement reads.

A snapshot is about 9-15 KB of JSON on a host with 30 VMs, most of it the VM list and the
per-VM use; placement, capacity and `host list` read a few figures, the topology and what
the VMs hold. At 10,000 hosts, decoding whole snapshots (and then every allocation) was
most of every ``vm create``, ``place``, ``capacity`` and ``host list`` (docs/scale.md), so
every writer stores the part too, and those readers decode only it. A row written before
that column existed has none: its whole snapshot is read instead, until the next snapshot
of that host replaces it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ppec.operator.store.backends import Connection
    from ppec.operator.store.tables import Store

# What snapshots.to_placement, the capacity report and `host list` read of a snapshot (its
# time of record is the row's taken_at column). Beside these figures:
# - ``topology_text``: the topology as its JSON text. Few distinct ones exist in a fleet,
#   and ppec.numa.serial finds an already parsed one by that text without decoding it.
# - ``allocations_text`` and ``summary``: what the VMs hold, as JSON text, and the
#   numbers placement's index reads of it (ppec.placement.Summary, computed here by its own
#   code). A fleet-wide decision builds its index from the summaries and decodes the
#   allocations only of the hosts its exact NUMA check reads (operator/storedhost.py).
#   A snapshot whose topology or allocations do not parse keeps them as they came.
FIGURES = ("cpu_overcommit", "storage_free_bytes", "cpu_percent",
           "vm_count",    # vm_count: for `ppec host list`, which reads this part too
           "networks",    # the agent's networks: placement's network filter
           "images",      # the images it holds (digest, size): the image filter and weight
           # for the HTTP side's fleet-wide views (service/http/brief.py)
           "storage_total_bytes", "agent_version")
USE_KEYS = ("cpu_used", "rss_mib")    # of vm_use, whose per-VM figures placement ignores

_UPSERT = ("INSERT INTO snapshots (host, taken_at, data, placement, allocations, topology) "
           "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(host) DO UPDATE SET "
           "taken_at=excluded.taken_at, data=excluded.data, placement=excluded.placement, "
           "allocations=excluded.allocations, topology=excluded.topology")

# Hosts per query when reading some hosts' rows: far below any backend's bound on
# parameters (SQLite's default is 32766, PostgreSQL's 65535).
IN_BATCH = 500


Row = tuple[str, float, str, str, str | None, str | None]


def rows_in(db: Connection, sql: str, names: Sequence[str]) -> list[Any]:
    """The rows of ``sql`` (whose ``{}`` stands for the IN list's placeholders) for
    ``names``, asked IN_BATCH names at a time."""
    out: list[Any] = []
    for i in range(0, len(names), IN_BATCH):
        batch = list(names[i:i + IN_BATCH])
        out += db.execute(sql.format(",".join("?" * len(batch))), batch).fetchall()
    return out


def row(host: str, taken_at: float, data: dict[str, Any]) -> Row:
    """``host``'s snapshot as its row: encoded, with its placement part, and the
    allocations' and the topology's text in columns of their own: inside the part's
    JSON, every reader's ``json.loads`` copied them (5-8 KB a host, most of reading
    10,000 parts), though only the hosts an exact NUMA check reads decode the
    allocations, and a fleet holds a few distinct topologies, each parsed once."""
    part = placement_part(data)
    allocations = part.pop("allocations_text", None)
    topology = part.pop("topology_text", None)
    return host, taken_at, json.dumps(data), json.dumps(part), allocations, topology


def write(db: Connection, snapshot_row: Row) -> None:
    """Store (or replace) a snapshot's row, in the caller's transaction."""
    db.execute(_UPSERT, snapshot_row)


def placement_part(data: dict[str, Any]) -> dict[str, Any]:
    """The part of a whole snapshot that placement reads (see above)."""
    # Not for the store's readers: the writers (sync, the service's round) parse.
    from ppec.numa.serial import allocation_from_dict, topology_from_text, topology_text
    from ppec.operator.storedhost import summary_json
    from ppec.placement.model import HostSnapshot, Summary
    part = {k: data[k] for k in FIGURES if k in data}
    if isinstance(data.get("vm_use"), dict):
        part["vm_use"] = {k: data["vm_use"].get(k) for k in USE_KEYS}
    states: dict[str, int] = {}
    for vm in data.get("vms") or ():
        if isinstance(vm, dict):
            state = str(vm.get("state", ""))
            states[state] = states.get(state, 0) + 1
    part["vm_states"] = states      # VMs by state: the fleet views count them
    topology: Any = data.get("topology")
    allocations: Any = data.get("allocations", [])
    try:
        text = topology_text(topology)
        s = Summary.of(HostSnapshot("", topology_from_text(text, topology), tuple(
            allocation_from_dict(a) for a in allocations)))
    except (AttributeError, KeyError, TypeError, ValueError):
        # Kept as they came: the reader refuses them as it would the whole snapshot.
        return {**part, **{k: data[k] for k in ("topology", "allocations") if k in data}}
    part.update(topology_text=text, allocations_text=json.dumps(allocations),
                summary=summary_json(s))
    return part


def placement_views(store: Store, hosts: Sequence[str] | None = None
                    ) -> dict[str, dict[str, Any]]:
    """host -> the placement part of its stored snapshot, with the row's ``taken_at`` (the
    time of record); for ``hosts`` only, or every stored one (None)."""
    sql = ("SELECT host, taken_at, COALESCE(placement, data), allocations, topology "
           "FROM snapshots")
    if hosts is None:
        return _decoded(store.db.execute(sql).fetchall())
    return _decoded(rows_in(store.db, sql + " WHERE host IN ({})", hosts))


def _decoded(rows: list[Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for host, taken, text, allocations, topology in rows:
        view = json.loads(text)
        view["taken_at"] = float(taken)
        if allocations is not None:   # rows from before the columns keep them in the part
            view["allocations_text"] = allocations
        if topology is not None:
            view["topology_text"] = topology
        out[str(host)] = view
    return out
