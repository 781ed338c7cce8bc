"""``ppec alerts``: changes on hosts that ppec did not make."""

from __future__ import annotations

from typing import Annotated

import typer

from ppec.cli import output
from ppec.cli.common import OutputOpt, Run, command
from ppec.cli.output import Fmt
from ppec.core.errors import EXIT_DRIFT, EXIT_FAILED, EXIT_PARTIAL
from ppec.operator.fleet.client import fan_out

COLUMNS = [("host", "HOST"), ("code", "CODE"), ("object", "OBJECT"), ("detail", "DETAIL"),
           ("first_seen", "FIRST SEEN")]


@command
def alerts(run: Run, host: Annotated[list[str] | None, typer.Option(
               "--host", help="Only these hosts (repeatable); default all.")] = None,
           fmt: OutputOpt = Fmt.table) -> None:
    """Ask every agent to compare its ledger with libvirt now, and list what differs.

    Exit 10 when any alert is open; 5 when some hosts did not answer (1 if none did)."""
    ctx = run.ctx
    hosts = [ctx.store.host(h) for h in host] if host else ctx.store.hosts()
    results = fan_out(hosts, lambda h: ctx.client(h).call("drift.check"))
    rows = [{**a, "host": r.host} for r in results if r.ok for a in r.value["alerts"]]
    failed = [r for r in results if not r.ok]
    output.emit_list(fmt, {"alerts": rows, "errors": output.host_errors(failed)}, "alerts",
                     COLUMNS)
    if rows:
        raise typer.Exit(EXIT_DRIFT)
    if failed:
        raise typer.Exit(EXIT_FAILED if len(failed) == len(results) else EXIT_PARTIAL)
