"""``ppec place``: where a VM would go, and why every other host would not."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ppec.cli import options as opt
from ppec.cli import output
from ppec.cli.common import OutputOpt, Run, command
from ppec.cli.output import Fmt
from ppec.core.errors import EXIT_NO_CAPACITY
from ppec.operator import choose as scheduler

COLUMNS = [("rank", "RANK"), ("host", "HOST"), ("score", "SCORE"), ("verdict", "WHY")]


@command
def place(
    run: Run,
    cpus: opt.Cpus = None,
    memory: opt.Memory = None,
    disk: opt.Disk = None,
    flavor: opt.Flavor = None,
    region: opt.Region = "",
    vrf: opt.Vrf = "",
    tag: opt.Tag = None,
    ha_group: opt.HaGroup = "",
    spread: opt.SpreadOpt = opt.Spread.host,
    numa: opt.Numa = opt.NumaPolicy.shared,
    numa_nodes: opt.NumaNodes = 0,
    threads: opt.ThreadsOpt = opt.Threads.prefer,
    emulator: opt.EmulatorOpt = opt.Emulator.share,
    image: Annotated[str, typer.Option(
        metavar="NAME[@DIGEST]", help="A catalogue image: hosts holding it weigh more "
                                     "(weight image); without pushes on create "
                                     "([images] push_on_create = false) only they pass.")]
        = "",
    explain: Annotated[bool, typer.Option(
        "--explain", help="Every host: each filter's verdict and reason, each weigher's "
                          "score, the rank.")] = False,
    refresh: Annotated[bool, typer.Option(
        help="Ask every agent for a fresh snapshot first (default: the stored ones).")]
        = False,
    from_snapshot: Annotated[Path | None, typer.Option(
        help="Decide on a file from `ppec host export-snapshot` instead of the store.")]
        = None,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """Show where a VM of this shape would be placed; build nothing. Exit 3 if nowhere."""
    ctx = run.ctx
    ask = opt.make_ask(ctx.config, flavor, cpus, memory, disk, disk_required=False,
                       numa=numa, numa_nodes=numa_nodes, threads=threads, emulator=emulator,
                       region=region, vrf=vrf, tag=tag, ha_group=ha_group, spread=spread)
    ask = opt.with_image(ctx, ask, image)
    if from_snapshot is not None:
        fleet, hosts = scheduler.fleet_from_file(from_snapshot)
    else:
        hosts = ctx.store.hosts()
        fleet = scheduler.fleet_from_store(ctx, hosts,
                                           "refresh" if refresh else "stored")
    ask.check(hosts, fleet.free_ips)
    rows = scheduler.explain(ctx, fleet, ask)
    placed = [r for r in rows if r["passed"]]
    if fmt is Fmt.json:
        output.emit_json({"host": placed[0]["host"] if placed else None, "hosts": rows
                          if explain else placed})
    else:
        shown = rows if explain else placed
        output.emit_table([_row(r) for r in shown], COLUMNS)
        if not placed:
            output.error_line(fmt, "no host can take it: " + "; ".join(
                f"{r['host']}: {_first_reason(r)}" for r in rows), "NO_CAPACITY")
    if not placed:
        raise typer.Exit(EXIT_NO_CAPACITY)


def _first_reason(r: dict[str, Any]) -> str:
    for rule, reason in r["filters"].items():
        if reason is not None:
            return f"[{rule}] {reason}"
    return "passes"


def _row(r: dict[str, Any]) -> dict[str, Any]:
    if r["passed"]:
        why = ", ".join(f"{k} {v:.2f}" for k, v in r["weights"].items())
        why += "; " + "; ".join(r["notes"])
        return {"rank": r["rank"], "host": r["host"], "score": f"{r['score']:.3f}",
                "verdict": why}
    return {"rank": "-", "host": r["host"], "score": "-", "verdict": _first_reason(r)}
