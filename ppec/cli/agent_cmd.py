"""``ppec agent``: the host agents themselves."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, NoReturn

import typer

from ppec.cli import output
from ppec.cli.common import Run, command, held, partial_exit
from ppec.cli.output import Fmt, OutputOpt
from ppec.core.errors import EXIT_PENDING
from ppec.operator import hosts, makerchecker

app = typer.Typer(help="Host agents: status, sync (keep their files at this version).",
                  no_args_is_help=True)


@app.command("status")
@command
def status(
    run: Run,
    names: Annotated[list[str] | None, typer.Argument(help="Hosts; default all.")] = None,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """Ping each host's agent in parallel: reachable, version, round-trip time."""
    rows = [asdict(s) for s in hosts.status(run.ctx, names or [])]
    output.emit_list(fmt, {"agents": rows}, "agents",
                     [("host", "HOST"), ("ok", "OK"), ("version", "VERSION"),
                      ("latency_ms", "MS"), ("error", "ERROR")])
    partial_exit(sum(not r["ok"] for r in rows), len(rows))


@app.command("sync")
@command
def sync(
    run: Run,
    names: Annotated[list[str] | None, typer.Argument(help="Hosts; default all.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Only compare: list the files that differ.")] = False,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """Bring each host's agent to this ppec's files, compared by SHA-256.

    The agent stages the new files, checks them and that they import, swaps them in
    atomically and restarts itself; running VMs are not touched. Exit 5 when some hosts
    failed, 1 when all did. When policy says so ([approval.agent] operations = ["update"]),
    this makes one request per host instead (exit 4); each approval names these files."""
    # Here, not at the top: the syncer's tar/ctypes/tempfile imports would otherwise be
    # paid by every `ppec` command, `--help` included.
    from ppec.operator import agentsync as syncer
    if not dry_run and makerchecker.needs(run.ctx, "agent", "update"):
        _request_updates(run, names or [])
    rows = [asdict(s) for s in syncer.sync(run.ctx, names or [], dry_run=dry_run)]
    if fmt is not Fmt.json:
        rows = [{**r, "changed": len(r["changed"]), "removed": len(r["removed"])}
                for r in rows]
    output.emit_list(fmt, {"hosts": rows}, "hosts",
                     [("host", "HOST"), ("state", "STATE"), ("version", "FROM"),
                      ("to", "TO"), ("changed", "CHANGED"), ("removed", "REMOVED"),
                      ("error", "ERROR")])
    partial_exit(sum(r["state"] == "failed" for r in rows), len(rows))


def _request_updates(run: Run, names: list[str]) -> NoReturn:
    """Under policy: one request per outdated host (exit 4), nothing changed yet."""
    from ppec.operator import agentsync as syncer
    signer = run.signer()
    compared = syncer.sync(run.ctx, names, dry_run=True)
    requests = [makerchecker.request_agent_update(run.ctx, signer, c)
                for c in compared if c.state == "outdated"]
    for c in compared:
        if c.state == "failed":
            output.error_line(run.fmt, f"{c.host}: {c.error}", c.code or "FAILED")
    if not requests:
        raise typer.Exit(0 if all(c.state == "current" for c in compared) else 1)
    if len(requests) == 1 and len(compared) == 1:
        held(run.fmt, requests[0])
    output.emit_list(run.fmt, {"requests": requests}, "requests",
                     [("id", "ID"), ("operation", "OPERATION"), ("host", "HOST"),
                      ("state", "STATE")])
    raise typer.Exit(EXIT_PENDING)
