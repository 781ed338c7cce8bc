"""VM use across the fleet: `ppec vm stats` and `ppec host top`.

Each agent answers ``vm.stats`` with cumulative counters (one libvirt call for all the
VMs asked of it); rates come from two answers ``interval`` apart (``ppec.wire.vmstats``
defines every figure). A watch keeps the previous answer, so each refresh costs one call
per host and the first figure comes after one interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from ppec.core.errors import BadInput
from ppec.core.units import check_vm_name
from ppec.operator.context import Context
from ppec.operator.fleet.client import HostResult, fan_out
from ppec.operator.store import Host
from ppec.wire import vmstats

# host -> the VM names to ask it about (None: every ppec VM it holds)
Targets = dict[str, list[str] | None]
MIN_INTERVAL_S = 0.2


def vm_targets(ctx: Context, names: list[str], host: str | None = None) -> Targets:
    """Where each named VM lives, by the store (or ``host``). An unknown name fails
    here, before any agent is asked (exit 2)."""
    if not names:
        raise BadInput("name at least one VM")
    targets: Targets = {}
    for name in dict.fromkeys(names):
        check_vm_name(name)
        where = ctx.store.host(host).name if host else ctx.store.vm(name).host
        listed = targets.setdefault(where, [])
        assert listed is not None
        listed.append(name)
    return targets


def host_targets(ctx: Context, host: str) -> Targets:
    return {ctx.store.host(host).name: None}


def _ask(ctx: Context, targets: Targets) -> list[HostResult]:
    hosts: list[Host] = [ctx.store.host(h) for h in targets]

    def one(h: Host) -> Any:
        names = targets[h.name]
        client = ctx.client(h)
        return client.call("vm.stats", names=names) if names else client.call("vm.stats")
    return fan_out(hosts, one)


def watch(ctx: Context, targets: Targets, interval: float,
          sleep: Callable[[float], None] = time.sleep) -> Iterator[dict[str, Any]]:
    """One document per ``interval``: every VM's use over the last interval, and the hosts
    that did not answer. When every host fails, the first host's error is raised."""
    if interval < MIN_INTERVAL_S:
        raise BadInput(f"the interval must be at least {MIN_INTERVAL_S} s")
    before = _ask(ctx, targets)
    while True:
        sleep(interval)
        after = _ask(ctx, targets)
        yield _document(before, after)
        before = after


def _document(before: list[HostResult], after: list[HostResult]) -> dict[str, Any]:
    failed = [r for r in after if not r.ok]
    if failed and len(failed) == len(after):
        assert failed[0].error is not None
        raise failed[0].error
    old = {(r.host, s["name"]): s for r in before if r.ok for s in r.value["vms"]}
    rows = [{**vmstats.rates(old.get((r.host, s["name"])), s), "host": r.host}
            for r in after if r.ok for s in r.value["vms"]]
    return {"vms": vmstats.by_cpu(rows), "taken_at": time.time(),
            "errors": [{"host": r.host, "code": r.error.code if r.error else "FAILED",
                        "message": r.error.message if r.error else ""} for r in failed]}
