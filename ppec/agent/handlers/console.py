"""A VM's serial console: its log (``vm.logs``) and an interactive session (``vm.console``).

Neither takes the host lock: reading a log file and opening a console change nothing the
lock guards, and a console session lasts as long as someone types.
"""

from __future__ import annotations

from typing import Any

from ppec.agent import consolelog
from ppec.agent.console import Consoles, Streaming
from ppec.agent.context import AgentContext
from ppec.agent.hvconsole import open_console
from ppec.core.errors import Conflict


class ConsoleHandlers:
    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self.consoles = Consoles(lambda vm, force: open_console(ctx.hv, vm, force))

    def logs(self, name: str, lines: int, cursor: str | None) -> dict[str, Any]:
        self.ctx.owned(name)   # unknown: NOT_FOUND; someone else's domain: NOT_OWNED
        path = self.ctx.console_log(name)
        got = consolelog.tail(path, lines) if cursor is None \
            else consolelog.since(path, cursor)
        return {"name": name, "host": self.ctx.host, **got}

    def open(self, name: str, force: bool, client: str) -> dict[str, Any]:
        dom, _ = self.ctx.owned(name)
        if dom is None:
            raise Conflict(f"VM {name} is in the ledger but libvirt has no such domain",
                           code="MISSING")
        if not dom.active:
            raise Conflict(f"VM {name} is {dom.state}: it has a console only while it runs "
                           f"(`ppec vm start {name}`; its past output: `ppec vm logs "
                           f"{name}`)", code="NOT_RUNNING", details={"state": dom.state})
        session, old = self.consoles.open(name, force, client or "unnamed client")
        return Streaming({"stream": "console", "name": name, "host": self.ctx.host,
                          "escape": "^]", "took_over": old.holder() if old else None},
                         session.relay, session.cancel)
