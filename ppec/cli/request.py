"""``ppec request`` and ``ppec audit``: maker-checker requests and their trail."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from ppec.cli import output
from ppec.cli.common import OutputOpt, Run, command
from ppec.cli.output import Fmt
from ppec.core.errors import EXIT_FAILED, EXIT_PARTIAL
from ppec.operator import audit, makerchecker

app = typer.Typer(help="Maker-checker requests: list, show, approve, reject, cancel.",
                  no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log: list, verify.", no_args_is_help=True)

COLUMNS = [("id", "ID"), ("state", "STATE"), ("operation", "OPERATION"),
           ("resource", "RESOURCE"), ("host", "HOST"), ("maker", "MAKER"),
           ("checker", "CHECKER"), ("note", "NOTE")]
FIELDS = [(k, k) for k, _ in COLUMNS] + [("digest", "digest")]


@app.command("list")
@command
def list_(run: Run, state: Annotated[str | None, typer.Option(
              help="pending, approved, rejected, cancelled, executed, failed")] = None,
          fmt: OutputOpt = Fmt.table) -> None:
    """List requests."""
    rows = makerchecker.list_(run.ctx, state)
    output.emit_list(fmt, {"requests": rows}, "requests", COLUMNS)


@app.command("show")
@command
def show(run: Run, request_id: int, fmt: OutputOpt = Fmt.table) -> None:
    """Show one request, with its full signed payload in JSON."""
    doc = makerchecker.show(run.ctx, request_id)
    output.emit_record(fmt, doc, FIELDS)


@app.command("approve")
@command
def approve(run: Run, request_id: int, fmt: OutputOpt = Fmt.table) -> None:
    """Approve as the checker (signed with your key), then execute the request."""
    doc = makerchecker.approve(run.ctx, run.signer(), request_id)
    if doc["state"] == "approved":   # run by its maker (a console), not by the checker
        output.emit_record(fmt, doc, FIELDS, message=(
            f"request {request_id} approved by {doc['checker']}; {doc['maker']} runs it "
            f"(`ppec vm console {doc['resource']}`), once, before "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(float(doc['expires'])))}"))
        return
    output.emit_record(fmt, doc, FIELDS, message=f"request {request_id} approved by "
                                                 f"{doc['checker']} and executed")


@app.command("execute")
@command
def execute(run: Run, request_id: int, fmt: OutputOpt = Fmt.table) -> None:
    """Execute an approved request (every signature and rule is checked again first)."""
    doc = makerchecker.execute(run.ctx, request_id)
    output.emit_record(fmt, doc, FIELDS, message=f"request {request_id} executed")


@app.command("reject")
@command
def reject(run: Run, request_id: int,
           reason: Annotated[str, typer.Option(help="Why, for the maker.")] = "",
           fmt: OutputOpt = Fmt.table) -> None:
    """Reject a pending request (a checker; the maker cancels instead)."""
    doc = makerchecker.reject(run.ctx, run.signer(), request_id, reason)
    output.emit_record(fmt, doc, FIELDS, message=f"request {request_id} rejected")


@app.command("cancel")
@command
def cancel(run: Run, request_id: int, fmt: OutputOpt = Fmt.table) -> None:
    """Withdraw your own pending request."""
    doc = makerchecker.cancel(run.ctx, run.signer(), request_id)
    output.emit_record(fmt, doc, FIELDS, message=f"request {request_id} cancelled")


@audit_app.command("list")
@command
def audit_list(run: Run, fmt: OutputOpt = Fmt.table) -> None:
    """Every entry: who did what to which request, chained by hash."""
    rows = audit.entries(run.ctx.store)
    output.emit_list(fmt, {"entries": rows}, "entries",
                     [("seq", "SEQ"), ("at", "AT"), ("actor", "ACTOR"), ("action", "ACTION"),
                      ("request_id", "REQUEST"), ("detail", "DETAIL")])


@audit_app.command("verify")
@command
def audit_verify(run: Run, fmt: OutputOpt = Fmt.table) -> None:
    """Recompute the chain, check it against every host's anchors and the requests
    table; exit 1 naming the first problem, 5 when it holds but a host did not answer."""
    from ppec.operator import auditcheck
    doc = auditcheck.check(run.ctx)
    down = {h: a["error"] for h, a in doc["anchors"].items() if "error" in a}
    if fmt is Fmt.json:
        output.emit_json(doc)
    else:
        for host, err in down.items():
            output.error_line(fmt, f"{host}: anchors not checked: {err}", "HOST_DOWN")
        if doc["problem"] is not None:
            output.error_line(fmt, doc["problem"]["message"], "AUDIT_BROKEN")
        else:
            checked = sum(a["checked"] for a in doc["anchors"].values())
            hosts = len(doc["anchors"]) - len(down)
            output.emit_record(fmt, doc, message=(
                f"audit log intact: {doc['entries']} entries, {checked} anchors on "
                f"{hosts} host(s)" + (f"; {len(down)} host(s) not checked" if down else "")))
    if doc["problem"] is not None:
        raise typer.Exit(EXIT_FAILED)
    if down:
        raise typer.Exit(EXIT_PARTIAL)
