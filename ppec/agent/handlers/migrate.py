"""Live migration, both sides (docs/migration.md): the operator's CLI asks the source
for what the target needs, the target for a claim, the source to migrate, then each side
to settle. The data goes libvirt to libvirt, never through these calls."""

from __future__ import annotations

from typing import Any

from ppec.agent import hvmigrate, incoming, outgoing
from ppec.agent.context import AgentContext
from ppec.agent.vmops import VmOps


class MigrateHandlers:
    def __init__(self, ctx: AgentContext, ops: VmOps) -> None:
        self.ctx = ctx
        self.incoming = incoming.Incoming(ctx, ops)
        self.outgoing = outgoing.Outgoing(ctx, ops)

    # -- source -----------------------------------------------------------------------------

    def describe(self, name: str) -> dict[str, Any]:
        return self.outgoing.describe(name)

    def migrate(self, name: str, target: str, uri: str, xml: str, address: str = "",
                tls: bool = False, max_downtime: int = 0, bandwidth: int = 0,
                timeout: int = 600) -> dict[str, Any]:
        req = hvmigrate.Request(name=name, dconnuri=uri, address=address, xml=xml, tls=tls,
                                max_downtime_ms=max_downtime, bandwidth_mib=bandwidth)
        return self.outgoing.migrate(req, target, float(timeout))

    def job(self, name: str) -> dict[str, Any]:
        """The migration's progress (read without the lock, while it runs)."""
        rec = self.ctx.ledger.get(name)
        return {"name": name, "host": self.ctx.host,
                "state": rec.state if rec else "none",
                "job": hvmigrate.job(self.ctx.hv, name) if rec else {}}

    def abort(self, name: str) -> dict[str, Any]:
        """Abort the migration (the VM stays here); without the lock, while it runs."""
        self.ctx.owned(name)
        return {"name": name, "host": self.ctx.host,
                "aborted": hvmigrate.abort(self.ctx.hv, name)}

    def settle_out(self, name: str) -> dict[str, Any]:
        return self.outgoing.settle(name)

    # -- target -----------------------------------------------------------------------------

    def claim(self, name: str, document: dict[str, Any], uuid: str, created_at: str,
              xml: str, source: str, disks: list[dict[str, Any]] | None = None,
              seed: str = "", wait: int = 900) -> dict[str, Any]:
        return self.incoming.claim(incoming.Claim(
            name=name, document=document, uuid=uuid, created_at=created_at, xml=xml,
            disks=list(disks or []), seed=incoming.seed_bytes(seed) if seed else b"",
            source=source, wait=float(wait)))

    def settle_in(self, name: str, abandon: bool = False) -> dict[str, Any]:
        return self.incoming.settle(name, abandon)
