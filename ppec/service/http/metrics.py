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

from ppec.operator.store import Store, fleetstate
from ppec.operator.store.fleetstate import JobRun
from ppec.service.http import facts, views
from ppec.service.http.reader import Status
from ppec.service.http.snapcache import Parsed
from ppec.service.http.state import State

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MIB = 1 << 20

# (name, type, help) of the per-host families, in the order HostLines holds them.
HOST_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("ppec_host_info", "gauge", "1 per host in the inventory; state: fresh, stale, failed, "
                                "none"),
    ("ppec_host_up", "gauge", "1 when the service's last attempt reached the host"),
    ("ppec_host_drained", "gauge", "1 when the host is drained"),
    ("ppec_host_cpus", "gauge", "Usable CPUs (not reserved)"),
    ("ppec_host_cpus_used", "gauge", "CPUs held by dedicated VMs"),
    ("ppec_host_cpus_free", "gauge", "CPUs no dedicated VM holds (the shared pool)"),
    ("ppec_host_shared_vcpus", "gauge", "vCPUs of shared VMs, floating over the pool"),
    ("ppec_host_cpu_percent", "gauge", "Host CPU utilisation as the agent measured it"),
    ("ppec_host_memory_bytes", "gauge", "Memory of the NUMA cells"),
    ("ppec_host_memory_used_bytes", "gauge", "Memory committed to VMs"),
    ("ppec_host_memory_free_bytes", "gauge", "Memory not committed to VMs"),
    ("ppec_host_storage_used_bytes", "gauge", "Used bytes of the agent's storage dir"),
    ("ppec_host_storage_free_bytes", "gauge", "Free bytes of the agent's storage dir"),
    ("ppec_host_vms", "gauge", "VMs on the host at its snapshot"),
    ("ppec_numa_node_cpus_free", "gauge", "Free CPUs of a NUMA node"),
    ("ppec_numa_node_memory_free_bytes", "gauge", "Memory of a NUMA node not bound to VMs"),
)


def esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(frozen=True)
class HostKey:
    taken_at: float | None
    state: str | None
    drained: bool
    region: str
    rack: str


def host_lines(name: str, key: HostKey, parsed: Parsed | None, fresh: str) -> list[str]:
    """One host's samples, one string per family in HOST_FAMILIES ('' when none)."""
    lb = f'host="{esc(name)}",region="{esc(key.region)}",rack="{esc(key.rack)}"'
    out = [f'ppec_host_info{{{lb},state="{fresh}"}} 1\n',
           f"ppec_host_up{{{lb}}} {0 if key.state == 'failed' else 1}\n",
           f"ppec_host_drained{{{lb}}} {int(key.drained)}\n"]
    if parsed is None:
        return out + [""] * (len(HOST_FAMILIES) - len(out))
    s = parsed.summary
    pct = parsed.info.get("cpu_percent")
    values: list[Any] = [s.cpus, s.dedicated, s.pool, s.shared_vcpus, pct,
                         s.memory_mib * MIB, s.used_mib * MIB, s.free_mib * MIB,
                         max(0, parsed.storage_total - parsed.storage_free),
                         parsed.storage_free, len(parsed.vm_states)]
    for (family, _, _), value in zip(HOST_FAMILIES[3:14], values, strict=True):
        out.append("" if value is None else f"{family}{{{lb}}} {value}\n")
    cells = parsed.topology.cells
    out.append("".join(f'ppec_numa_node_cpus_free{{{lb},node="{c.id}"}} '
                       f"{s.node_free_cpus[i]}\n" for i, c in enumerate(cells)))
    out.append("".join(f'ppec_numa_node_memory_free_bytes{{{lb},node="{c.id}"}} '
                       f"{s.node_free_mib[i] * MIB}\n" for i, c in enumerate(cells)))
    return out


class Renderer:
    def __init__(self, st: State) -> None:
        self.st = st
        self._lines: dict[str, tuple[HostKey, str, list[str]]] = {}

    def fleet(self) -> tuple[list[tuple[str, HostKey, str]], dict[str, Parsed]]:
        rows = self.st.reader.store().db.execute(
            "SELECT h.name, h.region, h.rack, h.drained, s.taken_at, st.state "
            "FROM hosts h LEFT JOIN snapshots s ON s.host = h.name "
            "LEFT JOIN host_status st ON st.host = h.name ORDER BY h.name").fetchall()
        now = self.st.now()
        fleet = []
        for name, region, rack, drained, taken_at, state in rows:
            key = HostKey(None if taken_at is None else float(taken_at), state,
                          bool(drained), str(region), str(rack))
            status = Status(state, None, None, 0, "", "")
            fleet.append((str(name), key, views.host_state(key.taken_at, status, now,
                                                           self.st.fresh_for)))
        cache = self.st.reader.cache
        parsed = cache.get(self.st.reader.store(), {n: k.taken_at for n, k, _ in fleet
                                                   if k.taken_at is not None})
        cache.forget_except(n for n, _, _ in fleet)
        return fleet, parsed

    def render(self) -> str:
        started = time.perf_counter()
        fleet, parsed = self.fleet()
        now = self.st.now()
        lines: list[list[str]] = []
        kept: dict[str, tuple[HostKey, str, list[str]]] = {}
        ages: list[str] = []
        vms: Counter[str] = Counter()
        for name, key, fresh in fleet:
            hit = self._lines.get(name)
            if hit is None or hit[0] != key or hit[1] != fresh:
                hit = (key, fresh, host_lines(name, key, parsed.get(name), fresh))
            kept[name] = hit
            lines.append(hit[2])
            if key.taken_at is not None:
                ages.append(f'ppec_host_snapshot_age_seconds{{host="{esc(name)}"}} '
                            f"{max(0.0, now - key.taken_at):.3f}\n")
            p = parsed.get(name)
            if p is not None:
                if key.state == "failed":
                    vms["unknown"] += len(p.vm_states)
                else:
                    vms.update(p.vm_states.values())
        self._lines = kept
        out: list[str] = []
        for i, (family, kind, text) in enumerate(HOST_FAMILIES):
            out.append(f"# HELP {family} {text}\n# TYPE {family} {kind}\n")
            out.extend(block[i] for block in lines)
        out.append("# HELP ppec_host_snapshot_age_seconds Age of the host's latest snapshot\n"
                   "# TYPE ppec_host_snapshot_age_seconds gauge\n")
        out.extend(ages)
        out.append(self._fleet_families(fleet, vms))
        out.append("# HELP ppec_metrics_render_seconds Time to build this page\n"
                   "# TYPE ppec_metrics_render_seconds gauge\n"
                   f"ppec_metrics_render_seconds {time.perf_counter() - started:.6f}\n")
        return "".join(out)

    def _fleet_families(self, fleet: list[tuple[str, HostKey, str]],
                        vms: Counter[str]) -> str:
        store = self.st.reader.store()
        states = Counter(fresh for _, _, fresh in fleet)
        out = ["# HELP ppec_hosts Hosts by state (fresh, stale, failed, none)\n"
               "# TYPE ppec_hosts gauge\n"]
        out += [f'ppec_hosts{{state="{s}"}} {states.get(s, 0)}\n'
                for s in ("fresh", "stale", "failed", "none")]
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
