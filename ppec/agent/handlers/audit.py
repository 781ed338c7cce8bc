"""The operator's audit chain heads this host recorded (``audit.anchors``).

Each approved execution brings the head of the operator's audit chain with its envelope;
the ledger keeps it beside the spent nonce. An attacker who can write the operator store
but not this ledger cannot make the store's chain agree with these anchors after
truncating or rewriting it (see docs/design.md, "Audit anchors").
"""

from __future__ import annotations

from typing import Any

from ppec.agent.context import AgentContext


class AuditHandlers:
    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx

    def anchors(self) -> dict[str, Any]:
        return {"host": self.ctx.host, "anchors": self.ctx.ledger.anchors()}
