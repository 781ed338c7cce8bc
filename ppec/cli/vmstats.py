"""Rendering for `ppec vm stats` and `ppec host top` (imported inside those commands, so
`ppec --help` and other commands never load it).

Contract: without a watch, ``-o json`` prints one document ``{"vms": […], "errors": […],
"taken_at": …}``. With ``--watch S`` (and `host top` on a terminal), a table refreshes in
place on a terminal (rich Live), a table per sample when stdout is not a terminal, and
``-o json`` prints one such document per sample as a single line (JSON Lines) until
``--count`` samples or Ctrl-C. The fields are in docs/vmstats.md.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from itertools import islice
from typing import Any

import typer

from ppec.cli import output
from ppec.cli.output import Fmt
from ppec.cli.run import Run, partial_exit
from ppec.core.errors import BadInput
from ppec.operator import vmstats

COLUMNS = [("name", "NAME"), ("host", "HOST"), ("state", "STATE"), ("vcpus", "vCPUS"),
           ("cpu", "CPU%"), ("cpu_all", "CPU% ALL"), ("steal", "STEAL%"),
           ("memory", "MEMORY"), ("rss", "RSS"), ("blk_rd", "BLK RD/s"),
           ("blk_wr", "BLK WR/s"), ("net_rx", "NET RX/s"), ("net_tx", "NET TX/s")]


def _rate(value: float | None) -> str:
    """Bytes per second, in binary units with one decimal (people read these, not scripts)."""
    if value is None:
        return "-"
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value >= factor:
            return f"{value / factor:.1f}{unit}"
    return f"{value:.0f}B"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value}M"


def _row(vm: dict[str, Any]) -> dict[str, Any]:
    return {**vm, "cpu": vm["cpu_percent"], "cpu_all": vm["cpu_percent_of_vcpus"],
            "steal": vm["steal_percent"], "memory": _mib(vm["memory_mib"]),
            "rss": _mib(vm["rss_mib"]), "blk_rd": _rate(vm["block_read_bps"]),
            "blk_wr": _rate(vm["block_write_bps"]), "net_rx": _rate(vm["net_rx_bps"]),
            "net_tx": _rate(vm["net_tx_bps"])}


def _table(doc: dict[str, Any], title: str) -> Any:
    from rich.table import Table
    from rich.text import Text
    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for _, header in COLUMNS:
        table.add_column(header)
    for vm in doc["vms"]:
        row = _row(vm)
        table.add_row(*(Text(output._cell(row.get(k))) for k, _ in COLUMNS))
    for err in doc["errors"]:
        table.add_row(Text(f"{err['host']}: {err['message']}"))
    return table


def show(run: Run, targets: vmstats.Targets, interval: float, count: int | None,
         live: bool, title: str) -> None:
    """Sample ``count`` times (None: until Ctrl-C), ``interval`` apart, and render each
    sample in ``run.fmt``; exit 5 if some hosts did not answer the last sample."""
    fmt = run.fmt
    if fmt is Fmt.csv:
        raise BadInput("-o csv is not offered here; use -o json")
    docs: Iterator[dict[str, Any]] = vmstats.watch(run.ctx, targets, interval)
    if count is not None:
        docs = islice(docs, count)
    last: dict[str, Any] = {"errors": []}
    try:
        if live and fmt is Fmt.table and sys.stdout.isatty():
            last = _live(docs, title)
        elif count == 1:
            last = next(docs)
            _emit_one(fmt, last, title, json_line=False)
        else:
            for last in docs:
                _emit_one(fmt, last, title, json_line=True)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    for err in last["errors"]:
        output.error_line(fmt, f"{err['host']}: {err['message']}", err["code"])
    partial_exit(len(last["errors"]), len(targets))


def _emit_one(fmt: Fmt, doc: dict[str, Any], title: str, json_line: bool) -> None:
    if fmt is Fmt.json:
        if json_line:
            output.emit_json_line(doc)
        else:
            output.emit_json(doc)
        return
    output._console().print(_table(doc, title))


def _live(docs: Iterator[dict[str, Any]], title: str) -> dict[str, Any]:
    from rich.live import Live
    from rich.text import Text
    last: dict[str, Any] = {"errors": []}
    with Live(Text(f"{title}: sampling…"), console=output._console(), auto_refresh=False,
              screen=False) as live:
        for last in docs:
            live.update(_table(last, title), refresh=True)
    return last
