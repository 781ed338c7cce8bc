"""The source's side of a migration: what the target needs, the migration itself, and
letting the VM go once it runs on the target (docs/migration.md).

The row goes ``present`` -> ``migrating`` (with the target and its libvirt URI) before
libvirt is asked; the host lock is let go while the guest's memory and overlay are copied
(a migration of minutes must not hold up creates). A failed or aborted migration puts the
row back to ``present``: the guest never stopped running here. A finished one leaves the
source's domain shut off; the row goes only once the target runs the guest, which this
side checks itself, over libvirt, before it deletes a byte.
"""

from __future__ import annotations

import base64
import gzip
import logging
from typing import Any

from ppec.agent import fault, hvmigrate
from ppec.agent.context import AgentContext
from ppec.agent.ledger import VmRecord
from ppec.agent.vmops import VmOps
from ppec.core.errors import Conflict, PpecError

log = logging.getLogger(__name__)


class Outgoing:
    def __init__(self, ctx: AgentContext, ops: VmOps) -> None:
        self.ctx = ctx
        self.ops = ops

    def describe(self, name: str) -> dict[str, Any]:
        """Everything the target needs to claim ``name``: its document, its migratable
        XML, its data disks and its seed ISO (compressed: the keys and user-data in it
        are kept nowhere else)."""
        ctx = self.ctx
        self.settle(name)
        rec = self._movable(name)
        disks = ctx.ledger.disks(name)
        seed = ctx.seed_path(name)
        return {"name": name, "host": ctx.host, "uuid": rec.uuid,
                "created_at": rec.created_at, "document": rec.document,
                "xml": hvmigrate.migratable_xml(ctx.hv, name),
                "disks": [{"target": d.target, "path": d.path, "bytes": d.bytes,
                           "bus": d.bus, "format": d.format, "owned": d.owned,
                           "created_at": d.created_at} for d in disks],
                "seed": base64.b64encode(gzip.compress(seed.read_bytes())).decode()
                if seed.exists() else ""}

    def _movable(self, name: str) -> VmRecord:
        """The VM's row when it can move live now, else why not (describe and migrate
        both ask: a migrate call may come long after the description)."""
        ctx = self.ctx
        dom, rec = ctx.owned(name)
        if rec.state != "present":
            raise Conflict(f"VM {name} is {rec.state} on {ctx.host}; it can move when it "
                           f"is present", code="BUSY")
        if dom is None or dom.state != "running":
            raise Conflict(f"VM {name} is {dom.state if dom else 'missing'} on {ctx.host}; "
                           f"a live migration needs it running (start it first)",
                           code="NOT_RUNNING")
        if not rec.spec:
            raise Conflict(f"VM {name} was built before ppec kept VM documents; it cannot "
                           f"be migrated", code="NO_DOCUMENT")
        busy = [d.target for d in ctx.ledger.disks(name) if d.state != "attached"]
        if busy:
            raise Conflict(f"VM {name}: disk(s) {', '.join(busy)} are being attached or "
                           f"detached; try again when that is done", code="BUSY")
        return rec

    def migrate(self, req: hvmigrate.Request, target: str, timeout: float
                ) -> dict[str, Any]:
        ctx, name = self.ctx, req.name
        self._movable(name)
        ctx.ledger.set_move(name, "migrating", {"peer": target, "uri": req.dconnuri})
        fault.checkpoint(ctx.config, "migrate-marked")
        figures: dict[str, int] = {}
        try:
            ctx.migrating.add(name)
            try:
                with ctx.unlocked():
                    figures = hvmigrate.migrate(ctx.hv, req, timeout)
            finally:
                ctx.migrating.discard(name)
        except PpecError:
            if self.settle(name)["state"] != "target":
                raise
        fault.checkpoint(ctx.config, "migrate-copied")
        log.info("%s: migrated to %s", name, target)
        return {"name": name, "host": ctx.host, "target": target, "state": "copied",
                **figures}

    def settle(self, name: str) -> dict[str, Any]:
        """Where the guest of a ``migrating`` row is, and the row made to agree: still
        moving (left alone), here (``present`` again), or on the target (forgotten here:
        domain, overlay, seed, data disks, row)."""
        ctx = self.ctx
        rec = ctx.ledger.get(name)
        if rec is None or rec.state != "migrating":
            return {"name": name, "host": ctx.host, "state": rec.state if rec else "none"}
        dom = ctx.hv.find(name)
        move = rec.move
        if dom is not None and dom.active:
            # A migrate call of this process still running, libvirt's job, or the guest
            # paused for the switch-over (libvirt then stops this side, or resumes it).
            if name in ctx.migrating or hvmigrate.job(ctx.hv, name) or \
                    hvmigrate.paused_for_migration(ctx.hv, name):
                return {"name": name, "host": ctx.host, "state": "moving"}
            ctx.ledger.set_move(name, "present", None)
            log.info("%s: the migration ended without moving it; present here", name)
            return {"name": name, "host": ctx.host, "state": "source"}
        there = hvmigrate.runs_at(str(move.get("uri", "")), rec.uuid)
        if there is None:
            return {"name": name, "host": ctx.host, "state": "unknown",
                    "detail": f"cannot ask {move.get('peer')}'s libvirt ({move.get('uri')})"}
        if not there:
            # Runs nowhere: the copy here is the one to keep (shut off; start it).
            ctx.ledger.set_move(name, "present", None)
            ctx.ledger.set_power(name, "shut-off")
            log.warning("%s: runs neither here nor on %s; kept here, shut off", name,
                        move.get("peer"))
            return {"name": name, "host": ctx.host, "state": "source"}
        fault.checkpoint(ctx.config, "migrate-settle")
        self.ops.finish_delete(rec, dom)
        log.info("%s: runs on %s; forgotten here", name, move.get("peer"))
        return {"name": name, "host": ctx.host, "state": "target",
                "target": move.get("peer", "")}
