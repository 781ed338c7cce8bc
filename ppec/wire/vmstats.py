"""VM use from two samples of libvirt's domain counters: the one definition of every
rate `ppec vm stats`, `ppec host top` and the host snapshot report.

A sample (the agent's ``vm.stats`` answer, one per VM) holds cumulative counters and the
agent's monotonic clock; a rate is the difference of two samples of the same VM over the
time between them. Pure, so the CLI and the agent compute the same numbers.

CPU is reported two ways, because operators ask both "is it busy?" (of one vCPU, as
``top`` shows a process) and "is it saturated?" (of all its vCPUs):

- ``cpu_percent``: host CPU time of all the VM's QEMU threads over the interval, as a
  percent of ONE vCPU (100 = one vCPU's worth, up to 100 x vcpus; like virt-top).
- ``cpu_percent_of_vcpus``: the same divided by the VM's vCPU count (100 = all busy).
- ``vcpu_percent``: time in guest code only (libvirt vcpu.N.time), percent of one vCPU.
- ``steal_percent``: time the vCPUs were runnable but waited for a host CPU (libvirt
  vcpu.N.delay, the guest's steal), percent of one vCPU; null where the host kernel does
  not report it (no schedstats).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Sample = Mapping[str, Any]

# The counters a sample carries per block / network device, and their rate names.
BLOCK_COUNTERS = {"rd_bytes": "read_bps", "wr_bytes": "write_bps",
                  "rd_reqs": "read_iops", "wr_reqs": "write_iops"}
NET_COUNTERS = {"rx_bytes": "rx_bps", "tx_bytes": "tx_bps",
                "rx_pkts": "rx_pps", "tx_pkts": "tx_pps"}


def _delta(after: Any, before: Any) -> float | None:
    if after is None:
        return None
    if before is None or after < before:
        # Counters restart from zero with the QEMU process (a VM restarted in between,
        # a hot-plugged disk): what was counted since is all the new process did.
        return float(after)
    return float(after - before)


def _per_s(after: Any, before: Any, seconds: float) -> float | None:
    d = _delta(after, before)
    return None if d is None else round(d / seconds, 1)


def _pct(after: Any, before: Any, seconds: float) -> float | None:
    """Nanoseconds of CPU over ``seconds`` of wall time, as percent of one CPU."""
    d = _delta(after, before)
    return None if d is None else round(d / 1e9 / seconds * 100, 1)


def _mib(kib: Any) -> int | None:
    return None if kib is None else int(kib) // 1024


def _devices(after: list[Sample], before: list[Sample], counters: Mapping[str, str],
             seconds: float) -> list[dict[str, Any]]:
    """Per device: its cumulative counters and, over ``seconds`` (0: no rate), their rates."""
    old = {d["name"]: d for d in before}
    out = []
    for dev in after:
        prev = old.get(dev["name"], {})
        row: dict[str, Any] = {"name": dev["name"]}
        for counter, rate in counters.items():
            row[counter] = int(dev.get(counter) or 0)
            row[rate] = (_per_s(row[counter], prev.get(counter), seconds) or 0.0) \
                if seconds else None
        out.append(row)
    return out


def _total(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r[key] is not None]
    return round(sum(values), 1) if len(values) == len(rows) else None


def rates(before: Sample | None, after: Sample) -> dict[str, Any]:
    """One VM's use between two samples; with no usable ``before`` (none, the same clock
    reading, a VM not running) the memory figures and counters, and null rates."""
    seconds = float(after["clock_s"]) - float(before["clock_s"]) if before else 0.0
    if before is None or seconds <= 0 or after.get("cpu_ns") is None:
        before, seconds = {}, 0.0
    vcpus = int(after.get("vcpus") or 0)
    cpu = _pct(after.get("cpu_ns"), before.get("cpu_ns"), seconds) if seconds else None
    block = _devices(after.get("block", []), before.get("block", []), BLOCK_COUNTERS,
                     seconds)
    net = _devices(after.get("net", []), before.get("net", []), NET_COUNTERS, seconds)
    return {
        "name": after["name"], "state": after["state"], "vcpus": vcpus,
        "interval_s": round(seconds, 3),
        "cpu_percent": cpu,
        "cpu_percent_of_vcpus": round(cpu / vcpus, 1) if cpu is not None and vcpus else None,
        "vcpu_percent": _pct(after.get("vcpu_ns"), before.get("vcpu_ns"), seconds)
        if seconds else None,
        "steal_percent": _pct(after.get("steal_ns"), before.get("steal_ns"), seconds)
        if seconds else None,
        "memory_mib": _mib(after.get("memory_kib")),
        "max_memory_mib": _mib(after.get("max_memory_kib")),
        "rss_mib": _mib(after.get("rss_kib")),
        "balloon": {k: _mib(after.get(f"{k}_kib")) for k in ("available", "unused", "usable")},
        **{f"block_{k}": _total(block, k) if seconds else None
           for k in BLOCK_COUNTERS.values()},
        **{f"net_{k}": _total(net, k) if seconds else None for k in ("rx_bps", "tx_bps")},
        "block_read_bytes": sum(d["rd_bytes"] for d in block),
        "block_write_bytes": sum(d["wr_bytes"] for d in block),
        "block": block, "net": net,
    }


def by_cpu(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Busiest first (a VM with no rate, e.g. shut off, last), then by name."""
    def key(r: dict[str, Any]) -> tuple[bool, float, str]:
        cpu = r.get("cpu_percent")
        return cpu is None, -(cpu or 0.0), r["name"]
    return sorted(rows, key=key)
