"""libvirt's bulk domain statistics as ppec samples (``ppec.wire.vmstats``).

One ``virConnectGetAllDomainStats``/``virDomainListGetStats`` call reads every counter
of every VM asked, as ``virsh domstats`` does, rather than one round trip per VM and
counter group. Kept apart from ``ppec.agent.hypervisor`` (which is at its size limit) but
called through its connection, so libvirt errors still become ppec errors there.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import libvirt

GROUPS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
          | libvirt.VIR_DOMAIN_STATS_BALLOON | libvirt.VIR_DOMAIN_STATS_VCPU
          | libvirt.VIR_DOMAIN_STATS_INTERFACE | libvirt.VIR_DOMAIN_STATS_BLOCK)
# What the host snapshot's VM use reads (it is on the path of every `vm create` without a
# fresh snapshot): state and memory (RSS from /proc). The CPU, vCPU and block groups cost
# 3-15 ms a VM here (cgroup and resctrl walks, QEMU monitor queries); the snapshot takes
# CPU time from virDomainGetInfo instead (/proc, 10 ms ticks: plenty for its rates).
USE_GROUPS = libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_BALLOON
# A shut-off domain has no counters: libvirt then leaves them out rather than fail.
_STATES = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_BLOCKED: "running",
           libvirt.VIR_DOMAIN_PAUSED: "paused", libvirt.VIR_DOMAIN_SHUTDOWN: "shutting-down",
           libvirt.VIR_DOMAIN_SHUTOFF: "shut-off", libvirt.VIR_DOMAIN_CRASHED: "crashed",
           libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended"}
_BALLOON = {"memory_kib": "balloon.current", "max_memory_kib": "balloon.maximum",
            "rss_kib": "balloon.rss", "available_kib": "balloon.available",
            "unused_kib": "balloon.unused", "usable_kib": "balloon.usable"}
_BLOCK = {"rd_bytes": "rd.bytes", "wr_bytes": "wr.bytes", "rd_reqs": "rd.reqs",
          "wr_reqs": "wr.reqs"}
_NET = {"rx_bytes": "rx.bytes", "tx_bytes": "tx.bytes", "rx_pkts": "rx.pkts",
        "tx_pkts": "tx.pkts"}


def _vcpu_sum(raw: Mapping[str, Any], field: str) -> int | None:
    """Sum of ``vcpu.<n>.<field>`` over the vCPUs; None when libvirt gave none of them."""
    values = [int(v) for k, v in raw.items()
              if k.startswith("vcpu.") and k.endswith(f".{field}") and k.count(".") == 2]
    return sum(values) if values else None


def _devices(raw: Mapping[str, Any], prefix: str, fields: Mapping[str, str]
             ) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(int(raw.get(f"{prefix}.count", 0))):
        name = raw.get(f"{prefix}.{i}.name")
        # A disk's backing-chain layers repeat its name with a backingIndex: the top counts.
        if name is None or any(d["name"] == name for d in out):
            continue
        out.append({"name": str(name), **{k: int(raw.get(f"{prefix}.{i}.{v}", 0))
                                          for k, v in fields.items()}})
    return out


def parse(name: str, raw: Mapping[str, Any], clock_s: float) -> dict[str, Any]:
    """One domain's libvirt stats record as a ppec sample."""
    cpu = raw.get("cpu.time")
    return {
        "name": name, "state": _STATES.get(int(raw.get("state.state", 0)), "unknown"),
        "clock_s": clock_s,
        "vcpus": int(raw.get("vcpu.current", 0)) or None,
        "cpu_ns": None if cpu is None else int(cpu),
        "vcpu_ns": _vcpu_sum(raw, "time"),
        "steal_ns": _vcpu_sum(raw, "delay"),
        "wait_ns": _vcpu_sum(raw, "wait"),
        **{k: (None if raw.get(v) is None else int(raw[v])) for k, v in _BALLOON.items()},
        "block": _devices(raw, "block", _BLOCK),
        "net": _devices(raw, "net", _NET),
    }


def sample(conn: libvirt.virConnect, names: list[str], groups: int = GROUPS
           ) -> dict[str, dict[str, Any]]:
    """name -> sample of each of ``names`` that exists, all in one libvirt call (of
    ``groups``: a counter outside them is missing, i.e. null)."""
    try:
        return _sample(conn, names, groups)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
        # One went away between listing and reading (deleted meanwhile): list again.
        return _sample(conn, names, groups)


def _sample(conn: libvirt.virConnect, names: list[str], groups: int
            ) -> dict[str, dict[str, Any]]:
    if not names:
        return {}
    wanted = set(names)
    if len(wanted) > 1:
        doms = [d for d in conn.listAllDomains(0) if d.name() in wanted]
    else:
        try:
            doms = [conn.lookupByName(names[0])]
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            return {}
    if not doms:
        return {}
    records = conn.domainListGetStats(doms, groups, 0)
    clock = time.monotonic()
    out = {dom.name(): parse(dom.name(), raw, clock) for dom, raw in records}
    # libvirt's test driver reports the wall clock as CPU time: no figure beats a false one.
    if not groups & libvirt.VIR_DOMAIN_STATS_CPU_TOTAL and conn.getType().upper() != "TEST":
        for dom, _ in records:
            one = out[dom.name()]
            if one["state"] in ("running", "paused", "shutting-down"):
                one["cpu_ns"] = int(dom.info()[4])
    return out
