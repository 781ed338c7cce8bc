"""Host snapshots on the operator side: fetch, store, export, and turn into placement input."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppec.core.errors import BadInput
from ppec.core.freshness import FRESH, snapshot_state
from ppec.operator.context import Context
from ppec.operator.store import Host

if TYPE_CHECKING:
    from ppec.operator.fleet.client import HostResult

FORMAT = "ppec-snapshot/1"


def refresh(ctx: Context, hosts: list[Host],
            on_result: Callable[[HostResult], None] | None = None
            ) -> dict[str, dict[str, Any]]:
    """Ask each host's agent for a snapshot, in parallel; store the ones that answer.

    Returns host -> snapshot, or ``{"error": …}`` for a host that did not answer.
    """
    from ppec.operator.fleet.client import fan_out  # not for the store-only readers
    out: dict[str, dict[str, Any]] = {}
    for r in fan_out(hosts, lambda h: ctx.client(h).call("host.snapshot"),
                     on_result=on_result):
        if r.ok:
            data = dict(r.value)
            ctx.store.save_snapshot(r.host, float(data["taken_at"]), data)
            out[r.host] = data
        else:
            assert r.error is not None
            out[r.host] = {"error": r.error.message, "code": r.error.code}
    return out


def stored(ctx: Context) -> dict[str, dict[str, Any]]:
    """Every stored snapshot, whole (``taken_at``: the store's time of record)."""
    # The store's column is the time of record (the JSON carries the agent's copy).
    return {h: {**data, "taken_at": taken} for h, (taken, data) in ctx.store.snapshots().items()}


def for_placement(ctx: Context) -> dict[str, dict[str, Any]]:
    """Every stored snapshot, the part ``to_placement`` and capacity read
    (store/snaprows.py)."""
    from ppec.operator.store import snaprows
    return snaprows.placement_views(ctx.store)


def current(ctx: Context, hosts: list[Host], fresh_for: float,
            now: float | None = None) -> dict[str, dict[str, Any]]:
    """Snapshots for placement at the least cost: a stored one younger than ``fresh_for``
    is used as it is (``ppec serve`` keeps them so); only the hosts whose snapshot is stale,
    missing, older than the store's last VM change there (a create just made, by this or
    another ppec), or whose last poll failed (the service's host_status) are asked now.

    With no service running, every stored snapshot ages past ``fresh_for`` and this asks
    every host, as a refresh does. Placement's choice is still re-checked by the chosen
    agent under its lock, so a fresh-but-wrong view costs a late refusal, not a bad VM."""
    from ppec.operator.store import fleetstate, pages, snaprows
    now = time.time() if now is None else now
    have = snaprows.placement_views(ctx.store, [h.name for h in hosts])   # these hosts' only
    failed = {h for h, st in fleetstate.host_statuses(ctx.store).items()
              if st.state == "failed"}
    changed = pages.vm_changes(ctx.store)
    out: dict[str, dict[str, Any]] = {}
    ask: list[Host] = []
    for h in hosts:
        data = have.get(h.name)
        taken = None if data is None else float(data["taken_at"])
        if data is not None and snapshot_state(taken, now, fresh_for, changed.get(h.name),
                                               h.name in failed) == FRESH:
            out[h.name] = data
        else:
            ask.append(h)
    if ask:
        out.update(refresh(ctx, ask))
    return out


def to_placement(host: Host, data: dict[str, Any] | None) -> Any:
    """An inventory host and its agent's snapshot as ``ppec.placement.HostSnapshot``."""
    from ppec.numa.serial import allocation_from_dict, topology_from_dict, topology_from_text
    from ppec.numa.topology import Topology
    from ppec.placement import HostSnapshot

    common: dict[str, Any] = {"name": host.name, "region": host.region, "rack": host.rack,
              "power_domain": host.power_domain, "vrf": host.vrf, "tags": frozenset(host.tags),
              "drained": host.drained, "cost": host.cost, "power_idle_w": host.power_idle_w,
              "power_max_w": host.power_max_w}
    if data is None or "error" in data:
        error = (data or {}).get("error", "no snapshot yet (run `ppec place --refresh`)")
        return HostSnapshot(topology=Topology(()), reachable=False, error=error, **common)
    use = data.get("vm_use") or {}     # absent from snapshots older than vm.stats
    common.update(
        vm_cpu_used=None if use.get("cpu_used") is None else float(use["cpu_used"]),
        vm_rss_mib=None if use.get("rss_mib") is None else int(use["rss_mib"]),
        taken_at=float(data["taken_at"]), overcommit=float(data.get("cpu_overcommit", 4.0)),
        storage_free_bytes=int(data.get("storage_free_bytes", 0)),
        networks=frozenset(str(n["name"]) for n in data.get("networks", [])),
        images=frozenset(str(i["digest"]) for i in data.get("images", [])))
    common["topology"] = topology_from_text(data["topology_text"]) \
        if "topology_text" in data else topology_from_dict(data["topology"])
    if "allocations_text" in data:   # the store's placement part (store/snaprows.py)
        from ppec.operator.storedhost import stored_host
        return stored_host(data["summary"], data["allocations_text"], **common)
    return HostSnapshot(
        allocations=tuple(allocation_from_dict(a) for a in data.get("allocations", [])),
        **common)


def export(ctx: Context, path: Path) -> dict[str, Any]:
    """Everything a placement decision reads, in one file: inventory, snapshots, HA groups."""
    snaps = stored(ctx)
    groups: dict[str, Any] = {}
    doc: dict[str, Any] = {
        "format": FORMAT, "exported_at": time.time(),
        "hosts": [{"inventory": h.as_dict(), "snapshot": snaps.get(h.name)}
                  for h in ctx.store.hosts()],
        "ha_groups": groups,
    }
    for name, spread in ctx.store.ha_groups():
        groups[name] = {"spread": spread,
                        "members": [list(m) for m in ctx.store.ha_members(name)]}
    path.write_text(json.dumps(doc, indent=1, sort_keys=True))
    return {"path": str(path), "hosts": len(doc["hosts"]), "ha_groups": len(groups),
            "with_snapshot": sum(1 for h in doc["hosts"] if h["snapshot"])}


def load_file(path: Path) -> tuple[list[tuple[Host, dict[str, Any] | None]],
                                   dict[str, Any]]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"snapshot file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise BadInput(f"snapshot file {path} is not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BadInput(f"{path} is not a ppec snapshot export (format {FORMAT})")
    hosts = []
    for entry in doc["hosts"]:
        inv = dict(entry["inventory"])
        inv["tags"] = tuple(inv.get("tags", ()))
        hosts.append((Host(**inv), entry.get("snapshot")))
    return hosts, dict(doc.get("ha_groups", {}))


def freshness(data: dict[str, Any] | None, now: float, stale_after: float,
              changed_at: float | None = None) -> tuple[str, float]:
    """(state, age in seconds) of a stored snapshot: fresh, stale, changed (taken before
    ppec's last VM change on the host at ``changed_at``), or none (core/freshness.py)."""
    if not data or "taken_at" not in data:
        return "none", 0.0
    taken = float(data["taken_at"])
    return snapshot_state(taken, now, stale_after, changed_at), now - taken


def summary(host: str, data: dict[str, Any], now: float, stale_after: float,
            changed_at: float | None = None) -> dict[str, Any]:
    """One host's line for sync and host list: state, age and what the agent reported."""
    state, age = freshness(data, now, stale_after, changed_at)
    return {"host": host, "state": state, "age_s": round(age, 1), "changed_at": changed_at,
            "vms": data.get("vm_count"), "cpu_percent": data.get("cpu_percent"),
            "memory_free_mib": data.get("os_memory_available_mib"),
            "storage_free_gib": round(int(data.get("storage_free_bytes", 0)) / (1 << 30), 1)
            if data else None,
            "dedicated_cpus": data.get("dedicated_cpus"), "cpus": data.get("cpus")}
