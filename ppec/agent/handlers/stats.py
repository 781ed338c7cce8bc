"""``vm.stats``: libvirt's counters for some or all of this host's ppec VMs (read-only,
no host lock), and the VM use the host snapshot carries (rates since the last one)."""

from __future__ import annotations

import threading
import time
from typing import Any

from ppec.agent import domstats
from ppec.agent.context import AgentContext
from ppec.agent.handlers.vms import VmHandlers
from ppec.core.errors import NotFound
from ppec.wire import vmstats

# The snapshot's rates compare with the agent's previous sample of each VM; one taken less
# than this long ago is not a new baseline (the rate would cover a sliver of time), so
# snapshots in quick succession still measure over at least this long. Never a wait: a
# snapshot is on the path of every `vm create` that has no fresh one.
MIN_INTERVAL_S = 0.5


def held(vms: list[dict[str, Any]]) -> dict[str, int]:
    """This agent's VMs, as ``vm.list`` names them (its ledger and the domains whose
    metadata names this host: one ownership rule), with their vCPU counts as defined
    (libvirt's stats give none for a shut-off domain)."""
    return {v["name"]: int(v["vcpus"]) for v in sorted(vms, key=lambda v: v["name"])}


def sample(ctx: AgentContext, held: dict[str, int], names: list[str],
           groups: int = domstats.GROUPS) -> dict[str, dict[str, Any]]:
    # Through the hypervisor's connection and its libvirt error mapping (hypervisor.py is
    # at the module size limit, so the bulk stats code lives in domstats).
    found = ctx.hv.call("domain stats", lambda c: domstats.sample(c, names, groups))
    for name, one in found.items():
        one["vcpus"] = one["vcpus"] or held.get(name)
    return found


class StatsHandlers:
    def __init__(self, ctx: AgentContext, vms: VmHandlers) -> None:
        self.ctx = ctx
        self.vm_handlers = vms

    def vms(self, names: list[str] | None = None) -> dict[str, Any]:
        """Counters of ``names`` (every ppec VM of this host when None or empty); a name
        this agent does not hold is NOT_FOUND. A VM in the ledger without a domain is
        reported with state ``missing`` and no counters."""
        ours = held(self.vm_handlers.list_all()["vms"])
        if names:
            unknown = sorted(set(names) - ours.keys())
            if unknown:
                raise NotFound(f"no VM named {', '.join(unknown)} on {self.ctx.host}",
                               details={"unknown": unknown})
            wanted = list(dict.fromkeys(names))
        else:
            wanted = list(ours)
        found = sample(self.ctx, ours, wanted)
        clock = time.monotonic()
        return {"host": self.ctx.host, "taken_at": time.time(), "clock_s": clock,
                "vms": [found.get(n) or {"name": n, "state": "missing", "clock_s": clock,
                                         "block": [], "net": []} for n in wanted]}


class UseMeter:
    """Per-VM CPU and memory use for the host snapshot: rates since the previous
    snapshot's sample (kept here), so a snapshot every minute reports that minute. A VM
    new since the last snapshot has no rate yet (null: not measured, never idle)."""

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self._last: dict[str, dict[str, Any]] = {}    # newest baseline per VM
        self._older: dict[str, dict[str, Any]] = {}   # the one before it
        self._lock = threading.Lock()

    def use(self, vms: list[dict[str, Any]]) -> dict[str, Any]:
        """``vms``: the snapshot's own VM list (not listed a second time here)."""
        ours = held(vms)
        with self._lock:
            now = sample(self.ctx, ours, list(ours), domstats.USE_GROUPS)
            clock = time.monotonic()
            use = {name: self._rate(name, one, clock) for name, one in now.items()}
            self._last = {n: s for n, s in self._last.items() if n in now}
            self._older = {n: s for n, s in self._older.items() if n in now}
        cpu = [v["cpu_percent"] for v in use.values() if v["cpu_percent"] is not None]
        rss = [v["rss_mib"] for v in use.values() if v["rss_mib"] is not None]
        # Totals over the VMs measured; null when VMs exist but none could be (libvirt's
        # test driver counts nothing, or every VM is new): "not measured" is not "idle".
        return {"vms": use,
                "cpu_used": round(sum(cpu) / 100, 3) if cpu or not use else None,
                "rss_mib": sum(rss) if rss or not use else None}

    def _rate(self, name: str, one: dict[str, Any], clock: float) -> dict[str, Any]:
        base = self._last.get(name)
        if base is not None and clock - float(base["clock_s"]) < MIN_INTERVAL_S:
            base = self._older.get(name, base)   # the baseline before: a longer window
        else:
            if base is not None:
                self._older[name] = base
            self._last[name] = one
        r = vmstats.rates(base, one)
        return {k: r[k] for k in ("state", "vcpus", "interval_s", "cpu_percent",
                                  "memory_mib", "rss_mib")}
