"""``ppec rebalance``: a plan of live migrations that packs hosts (for power) or evens
their load, and with --apply the moves themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ppec.cli import output
from ppec.cli.common import OutputOpt, Run, command
from ppec.cli.output import Fmt
from ppec.cli.run import partial_exit
from ppec.core.errors import BadInput

COLUMNS = [("vm", "VM"), ("from", "FROM"), ("to", "TO"), ("state", "STATE")]


@command
def rebalance(
    run: Run,
    goal: Annotated[str, typer.Option(
        help="pack: empty hosts so they can be switched off (hosts freed, idle watts "
             "saved); spread: even CPU and memory use.")] = "pack",
    max_moves: Annotated[int, typer.Option(min=1, max=10_000,
                                           help="At most this many migrations.")] = 20,
    apply: Annotated[bool, typer.Option(
        "--apply", help="Run the moves (live migrations, one at a time, in order).")]
        = False,
    from_snapshot: Annotated[Path | None, typer.Option(
        help="Plan on a file from `ppec host export-snapshot` (a simulated fleet) instead "
             "of the store; cannot be applied.")] = None,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """A rebalancing plan (hbal-like): moves that each keep every placement rule (HA
    groups, NUMA fit, networks, drained hosts) on the fleet as the moves before them leave
    it, and the score before and after (lower is better). Without --apply it only
    prints.

    -o json: {goal, score_before, score_after, moves: [{vm, from, to}], hosts_freed,
    idle_watts_saved, applied: [{vm, from, to, state, error}] with --apply}. Exit 5 when
    some applied move failed."""
    from ppec.operator import choose
    from ppec.operator import rebalance as planner
    from ppec.wire.vmspec import literal
    chosen: planner.Goal = literal(goal, ("pack", "spread"), "--goal")
    if apply and from_snapshot is not None:
        raise BadInput("--apply moves real VMs: it cannot run on --from-snapshot")
    ctx = run.ctx
    docs: dict[str, dict[str, Any]] = {}
    if from_snapshot is not None:
        fleet, _ = choose.fleet_from_file(from_snapshot)
    else:
        fleet = choose.fleet_from_store(ctx, ctx.store.hosts(), "fresh", free_ips=None)
        docs = ctx.store.vm_documents()
    doc = planner.plan(ctx, fleet, chosen, max_moves, docs)
    failed = 0
    if apply:
        doc["applied"] = planner.apply(ctx, doc["moves"])
        failed = sum(1 for m in doc["applied"] if m["state"] != "moved")
    _show(doc, fmt)
    partial_exit(failed, len(doc.get("applied") or [None]))


def _show(doc: dict[str, Any], fmt: Fmt) -> None:
    if fmt is Fmt.json:
        output.emit_json(doc)
        return
    states = {m["vm"]: m["state"] for m in doc.get("applied", [])}
    output.emit_table([{**m, "state": states.get(m["vm"], "planned")} for m in doc["moves"]],
                      COLUMNS)
    output.emit_line(f"goal {doc['goal']}: score {doc['score_before']} -> "
                     f"{doc['score_after']}; {len(doc['moves'])} move(s)"
                     + (f"; hosts freed: {', '.join(doc['hosts_freed'])} "
                        f"({doc['idle_watts_saved']:.0f} W idle)"
                        if doc["hosts_freed"] else ""))
