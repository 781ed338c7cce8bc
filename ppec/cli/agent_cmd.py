"""``ppec agent``: the host agents themselves."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, NoReturn

import typer

from ppec.cli import output
from ppec.cli.common import OutputOpt, Run, command, held, partial_exit
from ppec.cli.output import Fmt
from ppec.core.errors import EXIT_FAILED, EXIT_PARTIAL, EXIT_PENDING
from ppec.operator import hosts, makerchecker

app = typer.Typer(help="Host agents: status, sync (keep their files at this version), "
                       "rollback.",
                  no_args_is_help=True)


@app.command("status")
@command
def status(
    run: Run,
    names: Annotated[list[str] | None, typer.Argument(help="Hosts; default all.")] = None,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """Ping each host's agent in parallel: reachable, version, release digest, round-trip
    time, and releases that failed their health check there (rolled back by the host)."""
    rows = [asdict(s) for s in hosts.status(run.ctx, names or [])]
    shown = rows if fmt is Fmt.json else [
        {**r, "digest": r["digest"][:12],
         "failed_releases": " ".join(d[:12] for d in r["failed_releases"])} for r in rows]
    output.emit_list(fmt, {"agents": shown}, "agents",
                     [("host", "HOST"), ("ok", "OK"), ("version", "VERSION"),
                      ("digest", "RELEASE"), ("latency_ms", "MS"),
                      ("failed_releases", "FAILED RELEASES"), ("error", "ERROR")])
    partial_exit(sum(not r["ok"] for r in rows), len(rows))


@app.command("sync")
@command
def sync(
    run: Run,
    names: Annotated[list[str] | None, typer.Argument(help="Hosts; default all.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Only compare: list the files that differ.")] = False,
    canary: Annotated[int, typer.Option(
        "--canary", min=1, help="Update this many hosts first; any failure stops the "
                                "rollout (the rest: not tried).")] = 1,
    max_parallel: Annotated[int, typer.Option(
        "--max-parallel", min=1, help="Hosts updated at once.")] = 32,
    allow_downgrade: Annotated[bool, typer.Option(
        "--allow-downgrade", help="Let a host go to an older version than it runs.")] = False,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """Bring each host's agent to this ppec's files, compared by SHA-256.

    The agent stages the new files, checks them and that they import, keeps them as a
    release, swaps them in atomically and restarts itself; its old code watches the new
    one answer and rolls back by itself if it does not. Running VMs are not touched.
    Exit 5 when some hosts failed or were not tried, 1 when all failed. When policy says
    so ([approval.agent] operations = ["update"]), this makes one request per host
    instead (exit 4); each approval names these files."""
    # Here, not at the top: the syncer's tar/ctypes/tempfile imports would otherwise be
    # paid by every `ppec` command, `--help` included.
    from ppec.operator import agentsync as syncer
    if not dry_run and makerchecker.needs(run.ctx, "agent", "update"):
        _request_updates(run, names or [], allow_downgrade)
    rows = [asdict(s) for s in syncer.sync(run.ctx, names or [], dry_run=dry_run,
                                           canary=canary, max_parallel=max_parallel,
                                           allow_downgrade=allow_downgrade)]
    _emit_hosts(fmt, rows)


def _emit_hosts(fmt: Fmt, rows: list[dict[str, Any]]) -> None:
    if fmt is not Fmt.json:
        rows = [{**r, "changed": len(r["changed"]), "removed": len(r["removed"])}
                for r in rows]
    output.emit_list(fmt, {"hosts": rows}, "hosts",
                     [("host", "HOST"), ("state", "STATE"), ("version", "FROM"),
                      ("to", "TO"), ("changed", "CHANGED"), ("removed", "REMOVED"),
                      ("error", "ERROR")])
    # A host not tried (behind a failed canary) is not done either: partly done, exit 5.
    if any(r["state"] in ("failed", "not tried") for r in rows):
        failed = sum(r["state"] == "failed" for r in rows)
        raise typer.Exit(EXIT_FAILED if failed == len(rows) else EXIT_PARTIAL)


@app.command("rollback")
@command
def rollback(
    run: Run,
    names: Annotated[list[str] | None, typer.Argument(help="Hosts; default all.")] = None,
    max_parallel: Annotated[int, typer.Option(
        "--max-parallel", min=1, help="Hosts rolled back at once.")] = 32,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """Return each host's agent to the previous release it keeps (no files are sent).

    Staged, checked and swapped like an update, then watched the same way; VMs are not
    touched. Exit 5 when some hosts failed, 1 when all did. Under policy
    ([approval.agent] operations = ["rollback"]) one request per host (exit 4), naming
    the running and the previous release by digest."""
    from ppec.operator import agentsync as syncer
    if makerchecker.needs(run.ctx, "agent", "rollback"):
        _request_rollbacks(run, names or [])
    _emit_hosts(fmt, [asdict(s) for s in syncer.rollback(run.ctx, names or [],
                                                         max_parallel)])


def _request_rollbacks(run: Run, names: list[str]) -> NoReturn:
    from ppec.operator import agentsync as syncer
    from ppec.operator.fleet.client import fan_out
    signer = run.signer()
    hosts = [run.ctx.store.host(n) for n in names] if names else run.ctx.store.hosts()
    requests = []
    for r in fan_out(hosts, lambda h: syncer.previous_of(run.ctx, h)):
        if r.ok:
            to, current, agent_name = r.value
            requests.append(makerchecker.create(
                run.ctx, signer, "rollback", "agent", "agent", host=agent_name,
                params={"inventory_host": r.host, "to": to, "current": current}))
        else:
            assert r.error is not None
            output.error_line(run.fmt, f"{r.host}: {r.error.message}", r.error.code)
    if not requests:
        raise typer.Exit(1)
    _held_all(run, requests)


def _held_all(run: Run, requests: list[dict[str, Any]]) -> NoReturn:
    if len(requests) == 1:
        held(run.fmt, requests[0])
    output.emit_list(run.fmt, {"requests": requests}, "requests",
                     [("id", "ID"), ("operation", "OPERATION"), ("host", "HOST"),
                      ("state", "STATE")])
    raise typer.Exit(EXIT_PENDING)


def _request_updates(run: Run, names: list[str], allow_downgrade: bool) -> NoReturn:
    """Under policy: one request per outdated host (exit 4), nothing changed yet."""
    from ppec.operator import agentsync as syncer
    signer = run.signer()
    compared = syncer.sync(run.ctx, names, dry_run=True)
    requests = [makerchecker.request_agent_update(run.ctx, signer, c, allow_downgrade)
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
