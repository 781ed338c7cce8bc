"""``ppec request`` and ``ppec audit``: maker-checker requests and their trail."""

from __future__ import annotations

from typing import Annotated

import typer

from ppec.cli import output
from ppec.cli.common import context
from ppec.cli.output import Fmt, OutputOpt
from ppec.core.signing import Signer
from ppec.operator import audit, makerchecker

app = typer.Typer(help="Maker-checker requests: list, show, approve, reject, cancel.",
                  no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log: list, verify.", no_args_is_help=True)

COLUMNS = [("id", "ID"), ("state", "STATE"), ("operation", "OPERATION"),
           ("resource", "RESOURCE"), ("host", "HOST"), ("maker", "MAKER"),
           ("checker", "CHECKER"), ("note", "NOTE")]
FIELDS = [(k, k) for k, _ in COLUMNS] + [("digest", "digest")]


def signer() -> Signer:
    return Signer(output.current.get("identity"))


@app.command("list")
def list_(state: Annotated[str | None, typer.Option(
              help="pending, approved, rejected, cancelled, executed, failed")] = None,
          fmt: OutputOpt = Fmt.table) -> None:
    """List requests."""
    output.use(fmt)
    with context() as ctx:
        rows = makerchecker.list_(ctx, state)
    output.emit_list(fmt, {"requests": rows}, "requests", COLUMNS)


@app.command("show")
def show(request_id: int, fmt: OutputOpt = Fmt.table) -> None:
    """Show one request, with its full signed payload in JSON."""
    output.use(fmt)
    with context() as ctx:
        doc = makerchecker.show(ctx, request_id)
    output.emit_record(fmt, doc, FIELDS)


@app.command("approve")
def approve(request_id: int, fmt: OutputOpt = Fmt.table) -> None:
    """Approve as the checker (signed with your key), then execute the request."""
    output.use(fmt)
    with context() as ctx:
        doc = makerchecker.approve(ctx, signer(), request_id)
    output.emit_record(fmt, doc, FIELDS, message=f"request {request_id} approved by "
                                                 f"{doc['checker']} and executed")


@app.command("execute")
def execute(request_id: int, fmt: OutputOpt = Fmt.table) -> None:
    """Execute an approved request (every signature and rule is checked again first)."""
    output.use(fmt)
    with context() as ctx:
        doc = makerchecker.execute(ctx, request_id)
    output.emit_record(fmt, doc, FIELDS, message=f"request {request_id} executed")


@app.command("reject")
def reject(request_id: int,
           reason: Annotated[str, typer.Option(help="Why, for the maker.")] = "",
           fmt: OutputOpt = Fmt.table) -> None:
    """Reject a pending request (a checker; the maker cancels instead)."""
    output.use(fmt)
    with context() as ctx:
        doc = makerchecker.reject(ctx, signer(), request_id, reason)
    output.emit_record(fmt, doc, FIELDS, message=f"request {request_id} rejected")


@app.command("cancel")
def cancel(request_id: int, fmt: OutputOpt = Fmt.table) -> None:
    """Withdraw your own pending request."""
    output.use(fmt)
    with context() as ctx:
        doc = makerchecker.cancel(ctx, signer(), request_id)
    output.emit_record(fmt, doc, FIELDS, message=f"request {request_id} cancelled")


@audit_app.command("list")
def audit_list(fmt: OutputOpt = Fmt.table) -> None:
    """Every entry: who did what to which request, chained by hash."""
    output.use(fmt)
    with context() as ctx:
        rows = audit.entries(ctx.store)
    output.emit_list(fmt, {"entries": rows}, "entries",
                     [("seq", "SEQ"), ("at", "AT"), ("actor", "ACTOR"), ("action", "ACTION"),
                      ("request_id", "REQUEST"), ("detail", "DETAIL")])


@audit_app.command("verify")
def audit_verify(fmt: OutputOpt = Fmt.table) -> None:
    """Recompute the chain; exit 1 naming the first entry that breaks it."""
    output.use(fmt)
    with context() as ctx:
        count = audit.verify(ctx.store)
    output.emit_record(fmt, {"ok": True, "entries": count},
                       message=f"audit log intact: {count} entries")
