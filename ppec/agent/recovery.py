"""Start-up: finish or undo what a crash interrupted, then trust the live XML's pins.

Runs under the host lock before the agent serves (see ``ppec.agent.daemon``).
"""

from __future__ import annotations

import logging

from ppec.agent import incoming, outgoing
from ppec.agent.context import AgentContext
from ppec.agent.vmops import VmOps
from ppec.core.errors import AlreadyExists, NotFound
from ppec.numa.topology import format_cpulist

log = logging.getLogger(__name__)


def recover(ctx: AgentContext, ops: VmOps) -> list[str]:
    """Finish or undo what a crash interrupted; returns what it did, for the log."""
    done = []
    for rec in ctx.ledger.all():
        dom = ctx.hv.find(rec.name)
        if rec.state == "creating":
            if dom is not None and ctx.ours(dom) and dom.active:
                ctx.ledger.set_state(rec.name, "present")
                done.append(f"{rec.name}: create had finished; kept")
            else:
                ops.undo_create(rec, defined=ctx.ours(dom))
                done.append(f"{rec.name}: interrupted create undone")
        elif rec.state == "deleting":
            ops.finish_delete(rec, dom)
            done.append(f"{rec.name}: interrupted delete finished")
    return done + settle_moves(ctx, ops) + ops.volumes.recover() + rebuild_holdings(ctx)


def settle_moves(ctx: AgentContext, ops: VmOps) -> list[str]:
    """Every migration the operator's CLI did not see to its end (start-up, drift
    check): each side asks libvirt (its own, and the peer's) where the guest runs. A claim
    whose guest runs here becomes the VM's row, one past its deadline is given up; a VM
    that runs on its target is forgotten here, one whose move failed is present again."""
    notes = []
    for rec in ctx.ledger.all():
        try:
            if rec.state == "incoming":
                state = incoming.Incoming(ctx, ops).settle(rec.name)["state"]
            elif rec.state == "migrating":
                state = outgoing.Outgoing(ctx, ops).settle(rec.name)["state"]
            else:
                continue
        except NotFound:   # gone from libvirt between the two reads
            continue
        if state not in ("moving", "waiting", "unknown"):
            notes.append(f"{rec.name}: {rec.state} settled: {state}")
    return notes


def rebuild_holdings(ctx: AgentContext) -> list[str]:
    """Re-read every VM's CPUs and memory from its live XML; the live XML wins.

    A mismatch with the ledger means someone changed the domain behind the agent's back
    (or a crash came between libvirt and the ledger): it is logged, for drift reports.
    """
    notes = []
    ledger = {a.vm: a for a in ctx.ledger.allocations()}
    for rec in ctx.ledger.all():
        dom = ctx.hv.find(rec.name)
        if rec.state != "present" or not ctx.ours(dom):
            continue
        cpus, memory = ctx.live_holdings(rec, ctx.hv.xml(rec.name))
        held = ledger.get(rec.name)
        if held is not None and (held.cpus, held.memory) == (cpus, memory):
            continue
        notes.append(f"{rec.name}: ledger held CPUs "
                     f"{format_cpulist(held.cpus) if held else '-'}, live XML has "
                     f"{format_cpulist(cpus) or '-'}; the live XML wins")
        log.warning("drift: %s", notes[-1])
        try:
            ctx.ledger.replace_holdings(rec.name, cpus, memory)
        except AlreadyExists as e:
            log.error("drift: %s: %s", rec.name, e)
            notes.append(f"{rec.name}: live CPUs collide with another VM's: {e}")
    return notes
