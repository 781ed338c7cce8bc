"""``vm.stats``: libvirt's counters for some or all of this host's ppec VMs (read-only,
no host lock), and the VM use the host snapshot carries (rates since the last one)."""

from __future__ import annotations

import threading
import time
from typing import Any

from ppec.agent import domstats
from ppec.agent.context import AgentContext
from ppec.core.errors import NotFound
from ppec.wire import vmstats

# The snapshot's rates need two samples: the last one kept here serves when it is at least
# this old and covers every VM; otherwise (the first snapshot, two in a row, a new VM) the
# agent samples twice, this far apart.
MIN_INTERVAL_S = 0.5


def ours(ctx: AgentContext) -> dict[str, int]:
    """This agent's VMs (in its ledger, or domains whose metadata names this host) and
    their vCPU counts as defined (libvirt's stats give none for a shut-off domain)."""
    held = {r.name: r.vcpus for r in ctx.ledger.all()}
    held.update({d.name: d.vcpus for d in ctx.hv.domains() if ctx.ours(d) or d.name in held})
    return dict(sorted(held.items()))


def sample(ctx: AgentContext, held: dict[str, int], names: list[str]
           ) -> dict[str, dict[str, Any]]:
    # Through the hypervisor's connection and its libvirt error mapping (hypervisor.py is
    # at the module size limit, so the bulk stats code lives in domstats).
    found = ctx.hv._call("domain stats", lambda c: domstats.sample(c, names))
    for name, one in found.items():
        one["vcpus"] = one["vcpus"] or held.get(name)
    return found


class StatsHandlers:
    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx

    def vms(self, names: list[str] | None = None) -> dict[str, Any]:
        """Counters of ``names`` (every ppec VM of this host when None or empty); a name
        this agent does not hold is NOT_FOUND. A VM in the ledger without a domain is
        reported with state ``missing`` and no counters."""
        held = ours(self.ctx)
        if names:
            unknown = sorted(set(names) - held.keys())
            if unknown:
                raise NotFound(f"no VM named {', '.join(unknown)} on {self.ctx.host}",
                               details={"unknown": unknown})
            wanted = list(dict.fromkeys(names))
        else:
            wanted = list(held)
        found = sample(self.ctx, held, wanted)
        clock = time.monotonic()
        return {"host": self.ctx.host, "taken_at": time.time(), "clock_s": clock,
                "vms": [found.get(n) or {"name": n, "state": "missing", "clock_s": clock,
                                         "block": [], "net": []} for n in wanted]}


class UseMeter:
    """Per-VM CPU and memory use for the host snapshot: rates since the previous
    snapshot's sample (kept here), so a snapshot every minute reports that minute."""

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self._last: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def use(self) -> dict[str, Any]:
        with self._lock:
            held = ours(self.ctx)
            now = sample(self.ctx, held, list(held))
            clock = time.monotonic()
            last = {n: s for n, s in self._last.items() if n in now}
            age = min((clock - float(s["clock_s"]) for s in last.values()), default=0.0)
            # A VM new since the last sample (just created) has nothing to compare with.
            # Only where libvirt counts CPU at all (its test driver does not) is a second
            # sample worth the wait.
            counted = any(one.get("cpu_ns") is not None for one in now.values())
            if counted and (last.keys() != now.keys() or age < MIN_INTERVAL_S):
                time.sleep(MIN_INTERVAL_S)
                last, now = now, sample(self.ctx, held, list(held))
            self._last = now
        vms = {}
        for name, one in now.items():
            r = vmstats.rates(last.get(name), one)
            vms[name] = {k: r[k] for k in ("state", "vcpus", "interval_s", "cpu_percent",
                                           "memory_mib", "rss_mib")}
        cpu = [v["cpu_percent"] for v in vms.values() if v["cpu_percent"] is not None]
        rss = [v["rss_mib"] for v in vms.values() if v["rss_mib"] is not None]
        # Totals over the VMs measured; null when VMs exist but none could be (libvirt's
        # test driver counts nothing): "not measured" must not read as "idle".
        return {"vms": vms,
                "cpu_used": round(sum(cpu) / 100, 3) if cpu or not vms else None,
                "rss_mib": sum(rss) if rss or not vms else None}
