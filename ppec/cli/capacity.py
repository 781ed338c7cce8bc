"""``ppec capacity``: what the fleet has, and how many more of a shape fit, where."""

from __future__ import annotations

from typing import Annotated

import typer

from ppec.cli import options as opt
from ppec.cli import output
from ppec.cli.common import OutputOpt, Run, command
from ppec.cli.output import Fmt
from ppec.operator import capacity_report as cap

BASE = [("group", "GROUP"), ("hosts", "HOSTS"), ("cpus", "CPUS"), ("dedicated", "DEDICATED"),
        ("shared_vcpus", "SHARED vCPU"), ("free_cpus", "FREE CPUS"), ("memory_mib", "MEM MiB"),
        ("free_mib", "FREE MiB"), ("cpu_percent", "CPU%"), ("vm_cpu_percent", "VM CPU%"),
        ("vm_rss_mib", "VM RSS MiB")]


@command
def capacity(
    run: Run,
    cpus: opt.Cpus = None,
    memory: opt.Memory = None,
    disk: opt.Disk = None,
    flavor: opt.Flavor = None,
    numa: opt.Numa = opt.NumaPolicy.shared,
    numa_nodes: opt.NumaNodes = 0,
    threads: opt.ThreadsOpt = opt.Threads.prefer,
    emulator: opt.EmulatorOpt = opt.Emulator.share,
    region: opt.Region = "",
    vrf: opt.Vrf = "",
    tag: opt.Tag = None,
    spread: Annotated[opt.Spread | None, typer.Option(
        help="Count as one HA group: at most one per host, rack or power domain.")] = None,
    by: Annotated[str, typer.Option(help="region, rack, host or numa.")] = "host",
    largest: Annotated[bool, typer.Option(
        "--max", help="Also the largest single VM (dedicated and shared) that still fits "
                      "anywhere.")] = False,
    refresh: Annotated[bool, typer.Option(help="Sync every host first.")] = False,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """Cores, memory, disk and utilization per group; with a shape (--flavor or
    --cpus/--memory), how many more fit, counted exactly with the NUMA rules, and where.
    Uses the latest snapshots (`ppec sync`); stale or missing ones are excluded and listed."""
    ask = None
    if flavor or cpus or memory:
        ask = opt.make_ask(run.ctx.config, flavor, cpus, memory, disk, disk_required=False,
                           numa=numa, numa_nodes=numa_nodes, threads=threads,
                           emulator=emulator, region=region, vrf=vrf, tag=tag,
                           ha_group="capacity" if spread else "",
                           spread=spread or opt.Spread.host)
        ask.check(run.ctx.store.hosts())
    doc = cap.report(run.ctx, by=by, ask=ask, spread=ask.spread if ask and spread else None,
                     refresh=refresh, want_max=largest)
    columns = BASE + ([("fits", "FITS"), ("where", "WHERE")] if ask is not None else [])
    if fmt is Fmt.json:
        output.emit_json(doc)
        return
    rows = [{**g, "where": ", ".join(f"{w['host']}:{w['fits']}" for w in g.get("where", [])[:5])}
            for g in doc["groups"]] + [{**doc["total"], "group": "TOTAL", "where": ""}]
    output.emit_list(fmt, {"groups": rows}, "groups", columns)
    if fmt is Fmt.table:
        for e in doc["excluded"]:
            typer.echo(f"excluded: {e['host']} ({e['reason']})", err=True)
        if "largest" in doc:
            for kind, v in doc["largest"].items():
                typer.echo(f"largest {kind} VM: {v['vcpus']} vCPUs, {v['memory_mib']} MiB "
                           f"on {v['host'] or '-'}")
