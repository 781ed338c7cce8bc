"""Emptying a host for maintenance (issue 26): drain it, plan a target for every VM with
the placement rules holding across the whole plan, migrate, report per VM.

The plan is made one VM at a time, largest first, on a copy of the fleet that already
counts every earlier move: the target's snapshot takes the VM's allocation (its NUMA fit
there, as the agent will make it) and disk bytes, and the VM's HA group sees it at its
new spread key. So two members of one group never land together, and two moves never
count the same free CPUs twice. A VM no host can take is named with the reasons; the
others still move.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ppec.core.errors import PpecError
from ppec.operator import choose, fleetsim, migtarget
from ppec.operator.context import Context
from ppec.operator.store import Store
from ppec.wire.vmspec import VmSpec

Report = Callable[[dict[str, Any]], None]


@dataclasses.dataclass(frozen=True)
class Plan:
    host: str
    moves: list[tuple[str, str]]          # (VM, target)
    unplaced: list[tuple[str, str]]       # (VM, why no host can take it)


def plan(ctx: Context, host: str) -> Plan:
    """Where each VM of ``host`` goes (largest first), without moving anything."""
    ctx.store.host(host)
    hosts = [h for h in ctx.store.hosts() if h.name != host]
    fleet = choose.fleet_from_store(ctx, hosts, "fresh", free_ips=None) if hosts else None
    source = ctx.client(ctx.store.host(host))
    rows = sorted(ctx.store.vms(host), key=lambda r: (-r.memory_mib, -r.vcpus, r.name))
    moves, unplaced = [], []
    for row in rows:
        try:
            info = source.call("vm.migrate_info", name=row.name)
        except PpecError as e:
            unplaced.append((row.name, e.message))
            continue
        if fleet is None:
            unplaced.append((row.name, "no other host in the inventory"))
            continue
        spec = VmSpec.from_document(info["document"])
        ask = migtarget.ask_of(ctx, spec, info["disks"], migtarget.images_of(ctx, spec))
        decision = choose.decide(ctx, fleetsim.without_member(fleet, row.name, ask.ha_group),
                                 ask, scores=len(fleet.hosts) > 1)
        if not decision.ranked:
            unplaced.append((row.name, "; ".join(r.reason for r in decision.rejected)))
            continue
        target = decision.ranked[0].host
        moves.append((row.name, target))
        fleet = fleetsim.with_move(fleet, row.name, target, ask)
    return Plan(host, moves, unplaced)


def evacuate(ctx: Context, host: str, *, max_parallel: int = 1, dry_run: bool = False,
             report: Report | None = None, timeout: int = 600) -> dict[str, Any]:
    """Drain ``host``, then move every VM the plan places; a result per VM."""
    if not dry_run:
        ctx.store.set_drained(host, True)
    made = plan(ctx, host)
    results: list[dict[str, Any]] = [
        {"name": n, "state": "unplaced", "error": {"code": "NO_CAPACITY", "message": why}}
        for n, why in made.unplaced]
    if not dry_run:
        results += _run(ctx, made.moves, max_parallel, report, timeout, evacuating=host)
    else:
        results += [{"name": n, "state": "planned", "host": t} for n, t in made.moves]
    return {"host": host, "drained": True, "dry_run": dry_run,
            "moves": [{"name": n, "to": t} for n, t in made.moves],
            "results": sorted(results, key=lambda r: r["name"])}


def _run(ctx: Context, moves: list[tuple[str, str]], max_parallel: int,
         report: Report | None, timeout: int, evacuating: str | None = None
         ) -> list[dict[str, Any]]:
    """Each move on a context of its own (the store's connection is per thread); a VM an
    evacuation moves remembers the host it left (None: a move back forgets it)."""
    from ppec.operator import migrate

    def one(move: tuple[str, str]) -> dict[str, Any]:
        name, target = move
        own = Context(Store(ctx.store.location, ctx.config.store_connect_timeout), ctx.config,
                      ctx.reach, ctx.connect)
        try:
            done = migrate.migrate(own, migrate.MoveAsk(name, to=target, timeout=timeout))
            own.store.set_vm(name, evacuated_from=evacuating)
            result = {"name": name, "state": "moved", "host": done["host"],
                      "downtime_ms": done.get("downtime_ms")}
        except PpecError as e:
            result = {"name": name, "state": "failed", "host": target,
                      "error": {"code": e.code, "message": e.message}}
        finally:
            own.close()
            own.store.close()
        if report is not None:
            report(result)
        return result
    with ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool:
        return list(pool.map(one, moves))


def restore(ctx: Context, host: str, *, move_back: bool = False, max_parallel: int = 1,
            report: Report | None = None) -> dict[str, Any]:
    """Undrain ``host``; with ``move_back``, move back the VMs its evacuation moved."""
    ctx.store.set_drained(host, False)
    back = ctx.store.evacuated_from(host) if move_back else []
    results = _run(ctx, [(n, host) for n in back], max_parallel, report, 600)
    return {"host": host, "drained": False, "results": results}
