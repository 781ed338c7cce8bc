"""The JSON shapes the API answers and the UI draws: one host, one VM, one NUMA picture.

A host the service could not reach at its last attempt is ``failed``, and its VMs are
``unknown`` with the time they were last seen: never ``stopped``. Nothing acts on a VM
whose state is unknown (a VM reported stopped on an unreachable host was once started a
second time elsewhere).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ppec.core.freshness import snapshot_state
from ppec.service.http.brief import Brief
from ppec.service.http.reader import HostRow, Status, VmLine
from ppec.service.http.snapcache import LiveNic, Parsed


def host_state(row_taken_at: float | None, status: Status, now: float,
               fresh_for: float, changed_at: float | None = None) -> str:
    """fresh | stale | changed | failed | none: the rule of core/freshness.py."""
    return snapshot_state(row_taken_at, now, fresh_for, changed_at, status.state == "failed")


def _age(taken_at: float | None, now: float) -> float | None:
    return None if taken_at is None else round(max(0.0, now - taken_at), 3)


def status_doc(status: Status) -> dict[str, Any]:
    return {"state": status.state or "unknown", "last_ok": status.last_ok,
            "last_attempt": status.last_attempt, "failures": status.failures,
            "error_code": status.error_code, "error": status.error}


def resources(parsed: Brief | Parsed | None) -> dict[str, Any]:
    """CPU, memory and storage used and free, as placement counts them."""
    if parsed is None:
        return {"cpu": None, "memory": None, "storage": None, "vm_count": None,
                "numa_nodes": None, "vm_use": None}
    s = parsed.summary
    return {
        "cpu": {"total": s.cpus, "dedicated": s.dedicated, "shared_vcpus": s.shared_vcpus,
                "free": s.pool, "percent": parsed.info.get("cpu_percent")},
        "memory": {"total_mib": s.memory_mib, "used_mib": s.used_mib,
                   "free_mib": s.free_mib},
        "storage": {"total_bytes": parsed.storage_total,
                    "used_bytes": max(0, parsed.storage_total - parsed.storage_free),
                    "free_bytes": parsed.storage_free},
        "vm_count": parsed.vm_count, "numa_nodes": len(parsed.nodes),
        # What the VMs used, measured before the snapshot (docs/vmstats.md); None from an
        # agent that did not measure.
        "vm_use": None if parsed.info.get("vm_cpu_used") is None else {
            "cpu_used": parsed.info["vm_cpu_used"], "rss_mib": parsed.info.get("vm_rss_mib")},
    }


def host_doc(row: HostRow, parsed: Brief | Parsed | None, now: float,
             fresh_for: float) -> dict[str, Any]:
    h = row.host
    return {
        "name": h.name, "address": h.address, "region": h.region, "rack": h.rack,
        "power_domain": h.power_domain, "vrf": h.vrf, "tags": list(h.tags),
        "drained": h.drained,
        "state": host_state(row.taken_at, row.status, now, fresh_for, row.changed_at),
        "taken_at": row.taken_at, "age_s": _age(row.taken_at, now),
        "vms_changed_at": row.changed_at,
        "status": status_doc(row.status),
        **resources(parsed),
        "agent_version": None if parsed is None else parsed.info.get("agent_version"),
    }


def host_network_doc(parsed: Parsed | None) -> dict[str, Any]:
    """The host's networks as its agent found them, and how it gives VMs a CPU and NICs
    (None throughout without a snapshot; an older agent's snapshot has no networks)."""
    if parsed is None:
        return {"networks": None, "cpu_mode": None, "cpu_model": None, "vhost_net": None}
    return {"networks": [{"name": n.name, "kind": n.kind, "source": n.source, "mtu": n.mtu,
                          "present": n.present, "up": n.up, "device_mtu": n.device_mtu}
                         for n in parsed.networks],
            "cpu_mode": parsed.info.get("cpu_mode"), "cpu_model": parsed.info.get("cpu_model"),
            "vhost_net": parsed.info.get("vhost_net")}


def nics_doc(spec: str | None, live: tuple[LiveNic, ...]) -> list[dict[str, Any]]:
    """A VM's NICs: what ppec gave it (the stored document: MAC, VRF, address) completed
    with what its host's snapshot says of the same MAC (device, model, queues, tap), ""
    and 0 where the snapshot does not have it. No document (a VM made before them): []."""
    if spec is None:
        return []
    by_mac = {n.mac: n for n in live}
    out = []
    for nic in json.loads(spec).get("nics") or ():
        mac = str(nic.get("mac") or "")
        seen = by_mac.get(mac.lower())
        out.append({"mac": mac, "vrf": str(nic.get("vrf") or ""),
                    "network": seen.network if seen else "",
                    "bridge": seen.bridge if seen else "",
                    "address": str(nic.get("address") or ""),
                    "model": seen.model if seen else "", "queues": seen.queues if seen else 0,
                    "target": seen.target if seen else ""})
    return out


def _changed_since(line: VmLine) -> bool:
    """Whether ppec changed this VM after its host's snapshot (a `vm stop` the snapshot
    does not know of yet): its host's snapshot is `changed` (core/freshness.py) and the
    VM's own record changed no earlier than the second the snapshot was taken in (the
    record keeps whole seconds: within that second, the store's word is the safe one)."""
    taken, changed = line.taken_at, line.host_changed_at
    if taken is None or changed is None or taken > changed:
        return False
    updated = datetime.fromisoformat(str(line.vm["updated_at"])).timestamp()
    return updated + 1.0 > taken


def vm_doc(line: VmLine, parsed: Parsed | None, now: float) -> dict[str, Any]:
    """One VM: the store's record, its live state as of its host's snapshot; ``unknown``
    with ``last_seen`` when its host failed."""
    vm = dict(line.vm)
    seen = parsed.vm_states.get(vm["name"]) if parsed is not None else None
    if line.status.state == "failed":
        state, source = "unknown", "host failed"
    elif seen is not None and not _changed_since(line):
        state, source = seen, "snapshot"
    else:
        state, source = str(vm["state"]), "store"
    alloc = next((a for a in parsed.raw_allocations if a.get("vm") == vm["name"]), None) \
        if parsed is not None else None
    dedicated = alloc is not None and alloc.get("policy") == "dedicated"
    doc = {**vm, "state": state, "state_from": source,
           "numa": None if alloc is None else "dedicated" if dedicated else "shared",
           "cpus": sorted(int(c) for c in alloc["cpus"]) if alloc and dedicated else [],
           "nics": nics_doc(line.spec, parsed.vm_nics.get(vm["name"], ())
                            if parsed is not None else ()),
           "taken_at": line.taken_at, "age_s": _age(line.taken_at, now)}
    if state == "unknown":
        doc["last_seen"] = line.taken_at if line.taken_at is not None else line.status.last_ok
    return doc


def numa_doc(parsed: Parsed) -> dict[str, Any]:
    """Each NUMA node's CPUs and which VM holds each one (the host page's picture)."""
    topo = parsed.topology
    held = {cpu: a.vm for a in parsed.allocations if a.policy == "dedicated"
            for cpu in a.cpus}
    nodes = []
    for i, cell in enumerate(topo.cells):
        bound = sum(m for a in parsed.allocations for c, m in a.memory if c == cell.id)
        cpus = [{"id": c.id, "socket": c.socket, "core": c.core,
                 "siblings": sorted(c.siblings), "reserved": c.id in topo.reserved,
                 "vm": held.get(c.id)} for c in sorted(cell.cpus, key=lambda c: c.id)]
        nodes.append({"node": cell.id, "memory_mib": cell.memory_mib, "bound_mib": bound,
                      "free_mib": cell.memory_mib - bound,
                      "free_cpus": parsed.summary.node_free_cpus[i], "cpus": cpus,
                      "vms": sorted({c["vm"] for c in cpus if c["vm"]} |
                                    {a.vm for a in parsed.allocations
                                     if any(c == cell.id for c, _ in a.memory)})})
    shared = [a for a in parsed.allocations if a.policy == "shared"]
    return {"nodes": nodes, "shared": {
        "vms": sorted(a.vm for a in shared), "vcpus": sum(a.vcpus for a in shared),
        "cpus": parsed.summary.pool,
        "overcommit": parsed.info.get("cpu_overcommit")}}
