"""/metrics in Prometheus' text format (0.0.4), written by hand rather than through
prometheus_client: its collectors build one object per sample, and at 10,000 hosts
(~200,000 samples) that costs more than the scrape budget. Here each host's lines are
formatted once per snapshot (cached by taken_at and status) and a scrape joins them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from ppec.core import freshness
from ppec.core.freshness import snapshot_state
from ppec.operator.store import Store, fleetstate
from ppec.operator.store.fleetstate import JobRun
from ppec.service.http import facts
from ppec.service.http.brief import Brief
from ppec.service.http.state import State

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MIB = 1 << 20

# (name, type, help) of the per-host families, in the order host_lines() gives them.
# Only ppec_host_info carries region, rack, state and drained: join on host for those.
HOST_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("ppec_host_info", "gauge", "1 per host in the inventory, with its region, rack, "
                                "state (fresh, stale, failed, none) and drained flag"),
    ("ppec_host_up", "gauge", "1 unless the service's last attempt to reach the host failed"),
    ("ppec_host_cpus_used", "gauge", "Usable CPUs held by dedicated VMs"),
    ("ppec_host_cpus_free", "gauge", "Usable CPUs no dedicated VM holds (the shared pool)"),
    ("ppec_host_shared_vcpus", "gauge", "vCPUs of shared VMs, floating over the pool"),
    ("ppec_host_cpu_percent", "gauge", "Host CPU utilisation as the agent measured it"),
    ("ppec_host_memory_used_bytes", "gauge", "NUMA cell memory committed to VMs"),
    ("ppec_host_memory_free_bytes", "gauge", "NUMA cell memory not committed to VMs"),
    ("ppec_host_storage_used_bytes", "gauge", "Used bytes of the agent's storage file system"),
    ("ppec_host_storage_free_bytes", "gauge", "Free bytes of the agent's storage file system"),
    ("ppec_host_vms", "gauge", "VMs on the host at its snapshot"),
    ("ppec_host_vm_cpu_used", "gauge", "Host CPUs' worth of CPU its VMs used, as the agent "
                                       "measured it before the snapshot"),
    ("ppec_host_vm_rss_bytes", "gauge", "Resident memory of the host's VMs' QEMU processes"),
    ("ppec_host_images", "gauge", "Base images the host holds, at its snapshot"),
    ("ppec_numa_node_cpus_free", "gauge", "Usable CPUs of a NUMA node no dedicated VM holds"),
    ("ppec_numa_node_memory_free_bytes", "gauge", "Memory of a NUMA node not bound to VMs"),
)


def _bytes(mib: Any) -> int | None:
    return None if mib is None else int(mib) * MIB


def esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(frozen=True)
class HostKey:
    taken_at: float | None
    state: str | None
    drained: bool
    region: str
    rack: str


def host_lines(name: str, key: HostKey, parsed: Brief | None, fresh: str) -> list[str]:
    """One host's samples, one string per family in HOST_FAMILIES ('' when none)."""
    lb = f'host="{esc(name)}"'
    out = [f'ppec_host_info{{{lb},region="{esc(key.region)}",rack="{esc(key.rack)}",'
           f'state="{fresh}",drained="{str(key.drained).lower()}"}} 1\n',
           f"ppec_host_up{{{lb}}} {0 if key.state == 'failed' else 1}\n"]
    if parsed is None:
        return out + [""] * (len(HOST_FAMILIES) - len(out))
    s = parsed.summary
    values: list[Any] = [s.dedicated, s.pool, s.shared_vcpus, parsed.info.get("cpu_percent"),
                         s.used_mib * MIB, s.free_mib * MIB,
                         max(0, parsed.storage_total - parsed.storage_free),
                         parsed.storage_free, parsed.vm_count,
                         parsed.info.get("vm_cpu_used"), _bytes(parsed.info.get("vm_rss_mib")),
                         None if parsed.images is None else len(parsed.images)]
    for (family, _, _), value in zip(HOST_FAMILIES[2:14], values, strict=True):
        out.append("" if value is None else f"{family}{{{lb}}} {value}\n")
    out.append("".join(f'ppec_numa_node_cpus_free{{{lb},node="{n.id}"}} '
                       f"{s.node_free_cpus[i]}\n" for i, n in enumerate(parsed.nodes)))
    out.append("".join(f'ppec_numa_node_memory_free_bytes{{{lb},node="{n.id}"}} '
                       f"{s.node_free_mib[i] * MIB}\n" for i, n in enumerate(parsed.nodes)))
    return out


# name, region, rack, drained, taken_at, status, vms_changed_at
Row = tuple[str, str, str, int, float | None, str | None, float | None]


class Renderer:
    def __init__(self, st: State) -> None:
        self.st = st
        # host -> (what its lines were made from, the lines, its VMs by state)
        self._lines: dict[str, tuple[tuple[Any, ...], list[str], Counter[str]]] = {}

    def fleet(self) -> tuple[list[Row], dict[str, Brief]]:
        rows = self.st.reader.store().db.execute(
            "SELECT h.name, h.region, h.rack, h.drained, s.taken_at, st.state, "
            "h.vms_changed_at "
            "FROM hosts h LEFT JOIN snapshots s ON s.host = h.name "
            "LEFT JOIN host_status st ON st.host = h.name ORDER BY h.name").fetchall()
        parsed = self.st.reader.briefs.get(self.st.reader.store(), every=True, stamps={
            str(r[0]): float(r[4]) for r in rows if r[4] is not None})
        return rows, parsed

    def _host(self, row: Row, fresh: str, parsed: Brief | None
              ) -> tuple[tuple[Any, ...], list[str], Counter[str]]:
        name, region, rack, drained, taken_at, state, _changed = row
        made = (*row[1:], fresh)
        hit = self._lines.get(name)
        if hit is not None and hit[0] == made:
            return hit
        key = HostKey(taken_at, state, bool(drained), str(region), str(rack))
        vms: Counter[str] = Counter()
        if parsed is not None:
            if state == "failed":
                vms["unknown"] = parsed.vm_count
            else:
                vms.update(parsed.state_counts)
        return made, host_lines(name, key, parsed, fresh), vms

    def render(self) -> str:
        started = time.perf_counter()
        fleet, parsed = self.fleet()
        now, fresh_for = self.st.now(), self.st.fresh_for
        kept: dict[str, tuple[tuple[Any, ...], list[str], Counter[str]]] = {}
        ages: list[str] = []
        vms: Counter[str] = Counter()
        states: Counter[str] = Counter()
        for row in fleet:
            name, taken_at, state, changed_at = row[0], row[4], row[5], row[6]
            fresh = snapshot_state(taken_at, now, fresh_for, changed_at, state == "failed")
            states[fresh] += 1
            kept[name] = hit = self._host(row, fresh, parsed.get(name))
            vms.update(hit[2])
            if taken_at is not None:
                ages.append(f'ppec_host_snapshot_age_seconds{{host="{esc(name)}"}} '
                            f"{max(0.0, now - taken_at):.3f}\n")
        self._lines = kept
        blocks = [hit[1] for hit in kept.values()]
        out: list[str] = []
        for i, (family, kind, text) in enumerate(HOST_FAMILIES):
            out.append(f"# HELP {family} {text}\n# TYPE {family} {kind}\n")
            out.extend([block[i] for block in blocks])
        out.append("# HELP ppec_host_snapshot_age_seconds Age of the host's latest snapshot\n"
                   "# TYPE ppec_host_snapshot_age_seconds gauge\n")
        out.extend(ages)
        out.append(self._fleet_families(states, vms))
        out.append("# HELP ppec_metrics_render_seconds Time to build this page\n"
                   "# TYPE ppec_metrics_render_seconds gauge\n"
                   f"ppec_metrics_render_seconds {time.perf_counter() - started:.6f}\n")
        return "".join(out)

    def _fleet_families(self, states: Counter[str], vms: Counter[str]) -> str:
        store = self.st.reader.store()
        out = ["# HELP ppec_hosts Hosts by snapshot state (fresh, stale, changed: taken "
               "before a VM change, failed, none)\n"
               "# TYPE ppec_hosts gauge\n"]
        out += [f'ppec_hosts{{state="{s}"}} {states.get(s, 0)}\n'
                for s in freshness.STATES]
        out.append("# HELP ppec_vms VMs by state at their host's snapshot (unknown: the "
                   "host failed)\n# TYPE ppec_vms gauge\n")
        out += [f'ppec_vms{{state="{esc(s)}"}} {n}\n' for s, n in sorted(vms.items())]
        out.append("# HELP ppec_alerts_open Open fleet alerts by code\n"
                   "# TYPE ppec_alerts_open gauge\n")
        out += [f'ppec_alerts_open{{code="{esc(c)}"}} {n}\n'
                for c, n in facts.open_alert_counts(store).items()]
        out.append(_job_families(store))
        return "".join(out)


def _job_families(store: Store) -> str:
    jobs = fleetstate.jobs(store)
    families: tuple[tuple[str, str, str, Callable[[JobRun], str]], ...] = (
        ("ppec_job_duration_seconds", "gauge", "Duration of the job's last run",
         lambda j: f"{j.duration:.6f}"),
        ("ppec_job_last_run_timestamp_seconds", "gauge", "When the job's last run started",
         lambda j: f"{j.started:.3f}"),
        ("ppec_job_last_ok", "gauge", "1 when the job's last run succeeded",
         lambda j: str(int(j.ok))),
        ("ppec_job_hosts_failed", "gauge", "Hosts that failed in the job's last run",
         lambda j: str(j.failed)),
        ("ppec_job_runs_total", "counter", "Runs of the job", lambda j: str(j.runs)),
        ("ppec_job_failures_total", "counter", "Failed runs of the job",
         lambda j: str(j.failures)),
    )
    out = []
    for name, kind, text, value in families:
        out.append(f"# HELP {name} {text}\n# TYPE {name} {kind}\n")
        out += [f'{name}{{job="{esc(j.job)}"}} {value(j)}\n' for j in jobs]
    return "".join(out)


def router(st: State) -> APIRouter:
    metrics = APIRouter()
    renderer = Renderer(st)

    @metrics.get("/metrics", include_in_schema=False)
    def scrape() -> Response:
        return Response(renderer.render(), media_type=CONTENT_TYPE)

    return metrics
