"""``ppec agent``: the host agents themselves."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from ppec import hosts
from ppec.cli import output
from ppec.cli.common import context, partial_exit
from ppec.cli.output import Fmt, OutputOpt

app = typer.Typer(help="Host agents: status.", no_args_is_help=True)


@app.command("status")
def status(
    names: Annotated[list[str] | None, typer.Argument(help="Hosts; default all.")] = None,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """Ping each host's agent in parallel: reachable, version, round-trip time."""
    output.use(fmt)
    with context() as ctx:
        rows = [asdict(s) for s in hosts.status(ctx, names or [])]
    output.emit_list(fmt, {"agents": rows}, "agents",
                     [("host", "HOST"), ("ok", "OK"), ("version", "VERSION"),
                      ("latency_ms", "MS"), ("error", "ERROR")])
    partial_exit(sum(not r["ok"] for r in rows), len(rows))
