"""A rebalancing plan (issue 26), hbal-like: moves, each one allowed by placement's own
filters on the fleet as the moves before it leave it, and the score before and after.

- ``pack`` empties hosts so they can be switched off: the host with the fewest VMs is
  emptied onto hosts that already run VMs (best fit: the fullest that takes each VM),
  then the next, while the moves allowed (``max_moves``) last. Score: hosts running VMs,
  then their idle watts; lower is better. The plan reports hosts freed and watts saved.
- ``spread`` evens CPU and memory use: the move (a VM of the busiest host to any host)
  that lowers the score most, again and again. Score: the standard deviation of memory
  use plus that of CPU use (each a fraction of the host); lower is better.

The VMs are what the snapshots' allocations say (the VM's own document, where the store
has it, adds its disk and networks); HA groups come with the fleet.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Literal

from ppec.operator import choose, fleetsim
from ppec.operator.context import Context
from ppec.wire.vmspec import Pinning, Shape

Goal = Literal["pack", "spread"]


@dataclass(frozen=True)
class Move:
    vm: str
    source: str
    target: str


def asks(fleet: choose.Fleet, docs: dict[str, dict[str, Any]]) -> dict[str, choose.Ask]:
    """Each VM the snapshots show, as a placement request."""
    groups = {m[0]: g for g, ms in fleet.members.items() for m in ms}
    out = {}
    for snap in fleet.hosts:
        for a in snap.allocations:
            doc = docs.get(a.vm, {})
            mib = sum(m for _, m in a.memory)
            vrfs = [str(n["vrf"]) for n in doc.get("nics") or []]
            group = groups.get(a.vm, "")
            out[a.vm] = choose.Ask(
                shape=Shape(a.vcpus, mib, int(doc.get("disk_bytes", 0)),
                            Pinning(policy=a.policy, nodes=len(a.memory)
                                    if a.policy == "dedicated" else 0)),
                vrf=vrfs[0] if vrfs else "", nic_vrfs=tuple(vrfs[1:]), ha_group=group,
                spread=choose.spread_level(fleet.spreads.get(group, "host")))
    return out


def score(fleet: choose.Fleet, goal: Goal) -> float:
    if goal == "pack":
        busy = [s for s in fleet.hosts if s.allocations]
        return len(busy) + sum(s.power_idle_w for s in busy) / 1e6
    mem = [s.summary.used_mib / max(s.summary.memory_mib, 1) for s in fleet.hosts]
    cpu = [(s.summary.dedicated + s.summary.shared_vcpus / max(s.overcommit, 1e-9))
           / max(s.summary.cpus, 1) for s in fleet.hosts]
    return statistics.pstdev(mem) + statistics.pstdev(cpu)


def allows(ctx: Context, fleet: choose.Fleet, vm: str, target: str, ask: choose.Ask,
           now: float) -> bool:
    """Placement's filters let ``vm`` go to ``target`` on ``fleet`` as it is."""
    trial = fleetsim.without_member(choose.Fleet(
        [fleet.snapshot(target)], fleet.members, fleet.spreads, fleet.free_ips), vm,
        ask.ha_group)
    return bool(choose.decide(ctx, trial, ask, now=now, scores=False).ranked)


def plan(ctx: Context, fleet: choose.Fleet, goal: Goal, max_moves: int,
         docs: dict[str, dict[str, Any]] | None = None, now: float | None = None
         ) -> dict[str, Any]:
    now = time.time() if now is None else now
    wanted = asks(fleet, docs or {})
    before = score(fleet, goal)
    start = fleet
    planner = _pack if goal == "pack" else _spread
    moves, fleet = planner(ctx, fleet, wanted, max_moves, now)
    freed = [s.name for s in start.hosts if s.allocations and not fleet.snapshot(s.name)
             .allocations]
    return {"goal": goal, "score_before": round(before, 6),
            "score_after": round(score(fleet, goal), 6),
            "moves": [{"vm": m.vm, "from": m.source, "to": m.target} for m in moves],
            "hosts_freed": freed,
            "idle_watts_saved": sum(start.snapshot(h).power_idle_w for h in freed)}


def apply(ctx: Context, moves: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Run the plan's moves in order; each one's outcome (a failure does not stop the
    rest: each later move was checked on a fleet that assumed the earlier ones, so a
    failed one is reported, and the next still asks its target's agent, which re-checks)."""
    from ppec.core.errors import PpecError
    from ppec.operator import migrate
    done: list[dict[str, Any]] = []
    for m in moves:
        try:
            migrate.migrate(ctx, migrate.MoveAsk(m["vm"], to=m["to"]))
            done.append({**m, "state": "moved"})
        except PpecError as e:
            done.append({**m, "state": "failed",
                         "error": {"code": e.code, "message": e.message}})
    return done


def _pack(ctx: Context, fleet: choose.Fleet, wanted: dict[str, choose.Ask],
          max_moves: int, now: float) -> tuple[list[Move], choose.Fleet]:
    moves: list[Move] = []
    emptied: set[str] = set()
    while True:
        busy = sorted((s for s in fleet.hosts if s.allocations and not s.drained),
                      key=lambda s: (len(s.allocations), s.summary.used_mib, s.name))
        for source in busy:
            vms = sorted((a.vm for a in source.allocations),
                         key=lambda v: (-wanted[v].shape.memory_mib, v))
            if len(moves) + len(vms) > max_moves:
                continue
            trial, trial_moves = fleet, []
            for vm in vms:
                fits = [s for s in trial.hosts if s.name != source.name and s.allocations
                        and s.name not in emptied
                        and allows(ctx, trial, vm, s.name, wanted[vm], now)]
                if not fits:
                    break
                best = min(fits, key=lambda s: (s.summary.free_mib, s.name))
                trial_moves.append(Move(vm, source.name, best.name))
                trial = fleetsim.with_move(trial, vm, best.name, wanted[vm])
            else:
                fleet, moves = trial, moves + trial_moves
                emptied.add(source.name)
                break
        else:
            return moves, fleet


def _spread(ctx: Context, fleet: choose.Fleet, wanted: dict[str, choose.Ask],
            max_moves: int, now: float) -> tuple[list[Move], choose.Fleet]:
    moves: list[Move] = []
    while len(moves) < max_moves:
        current = score(fleet, "spread")
        busiest = max(fleet.hosts, key=lambda s: (s.summary.used_mib
                                                  / max(s.summary.memory_mib, 1), s.name))
        best: tuple[float, Move, choose.Fleet] | None = None
        for a in busiest.allocations:
            for target in fleet.hosts:
                if target.name == busiest.name or not allows(
                        ctx, fleet, a.vm, target.name, wanted[a.vm], now):
                    continue
                trial = fleetsim.with_move(fleet, a.vm, target.name, wanted[a.vm])
                after = score(trial, "spread")
                if after < current - 1e-9 and (best is None or after < best[0]):
                    best = (after, Move(a.vm, busiest.name, target.name), trial)
        if best is None:
            break
        moves.append(best[1])
        fleet = best[2]
    return moves, fleet
