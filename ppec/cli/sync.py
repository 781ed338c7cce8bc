"""``ppec sync``: fresh snapshots from every host, in parallel."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from ppec.cli import output
from ppec.cli.common import OutputOpt, Run, command, partial_exit
from ppec.cli.output import Fmt
from ppec.operator import snapshots
from ppec.operator.fleet.client import HostResult
from ppec.operator.store import pages

COLUMNS = [("host", "HOST"), ("state", "STATE"), ("vms", "VMS"), ("cpus", "CPUS"),
           ("dedicated_cpus", "DEDICATED"), ("cpu_percent", "CPU%"),
           ("memory_free_mib", "MEM FREE MiB"), ("storage_free_gib", "DISK FREE GiB"),
           ("error", "ERROR")]


@command
def sync(run: Run, names: Annotated[list[str] | None, typer.Argument(help="Hosts; default all.")]
         = None, fmt: OutputOpt = Fmt.table) -> None:
    """Ask every host's agent for its statistics and store them as its latest snapshot.

    Exit 5 when some hosts failed (the others are still stored), 1 when all did."""
    ctx = run.ctx
    hosts = [ctx.store.host(n) for n in names] if names else ctx.store.hosts()
    stale_after = ctx.config.stale_after()
    data = _with_progress(fmt, len(hosts),
                          lambda tick: snapshots.refresh(ctx, hosts, on_result=tick))
    now = time.time()
    changed = pages.vm_changes(ctx.store, [h.name for h in hosts])
    rows = []
    for h in hosts:
        d = data[h.name]
        if "error" in d:
            rows.append({"host": h.name, "state": "failed", "error": d["error"],
                         "code": d.get("code")})
        else:
            rows.append({**snapshots.summary(h.name, d, now, stale_after,
                                             changed.get(h.name)), "error": ""})
    output.emit_list(fmt, {"hosts": rows}, "hosts", COLUMNS)
    partial_exit(sum(1 for r in rows if r["state"] == "failed"), len(rows))


def _with_progress(fmt: Fmt, total: int, run: Any) -> Any:
    """A progress bar on a terminal (stderr); nothing for scripts."""
    if fmt is not Fmt.table or not sys.stderr.isatty() or total < 2:
        return run(lambda _r: None)
    from rich.progress import Progress
    with Progress(transient=True) as progress:
        task = progress.add_task("syncing hosts", total=total)

        def tick(_r: HostResult) -> None:
            progress.advance(task)
        return run(tick)
