"""Rendering: tables for people, JSON and CSV for scripts; errors in one place.

With ``-o json`` stdout carries exactly one JSON document and errors go to stderr as one
JSON line, so a runbook can parse both without guessing.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ppec.core.errors import PpecError

if TYPE_CHECKING:
    from ppec.operator.fleet.client import HostResult


class Fmt(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def _console() -> Any:
    from rich.console import Console  # rich is heavy; only tables pay for it
    width = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else None
    return Console(width=width, no_color=bool(os.environ.get("NO_COLOR")), highlight=False,
                   soft_wrap=False)


def emit_json(doc: Any) -> None:
    """Indented for a person at a terminal; one line for a script. Not cosmetic: with an
    indent, json runs its pure-Python encoder, 0.8 s of `place --explain` at 10,000
    hosts (5.7 MB), against 0.06 s for C's."""
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(doc, indent=indent, sort_keys=True, default=str) + "\n")


def emit_json_line(doc: Any) -> None:
    """One document of a stream (JSON lines: `--follow`, `--watch`, a push per host)."""
    sys.stdout.write(json.dumps(doc, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


# rich takes these as "this is a terminal": colour and bold headers even in a pipe.
_FORCED_TERMINAL = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


def _console_width() -> int:
    """The width rich would use when stdout is not a terminal: $COLUMNS, else the first
    of stdin, stdout, stderr that is a terminal, else 80."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    for fd in (0, 1, 2):
        try:
            return os.get_terminal_size(fd).columns or 80
        except (OSError, ValueError):
            continue
    return 80


def plain_table(grid: Sequence[Sequence[str]], width: int) -> str | None:
    """What rich prints for ``grid`` (a header line, then rows) as a table without box or
    colour, computed without loading rich (~25 ms of a `host list`): every cell one line
    of printable ASCII and the table no wider than ``width``. None when rich must lay it
    out itself (wrapping, wide characters). tests/cli/test_output.py holds the two equal."""
    if not all(cell.isascii() and cell.isprintable() for line in grid for cell in line):
        return None
    widths = [max(len(line[i]) for line in grid) for i in range(len(grid[0]))]
    if min(widths, default=0) == 0 or sum(widths) + 2 * (len(widths) - 1) > width:
        return None
    return "".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + "\n"
                   for line in grid)


def _plain() -> bool:
    """Output goes where rich would add nothing: no terminal, no colour forced."""
    return not sys.stdout.isatty() and not any(os.environ.get(k) for k in _FORCED_TERMINAL)


def plain_line(message: str, width: int) -> str | None:
    """What rich prints for ``message``, when that is the message itself: no markup
    (``[``), printable ASCII, no wider than ``width``; else None (rich wraps it)."""
    if "[" in message or not (message.isascii() and message.isprintable()) or \
            len(message) > width:
        return None
    return message + "\n"


def emit_line(message: str) -> None:
    """One line for people, as rich prints it (markup read, wrapped to the width)."""
    text = plain_line(message, _console_width()) if _plain() else None
    if text is not None:
        sys.stdout.write(text)
    else:
        _console().print(message)


def emit_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]],
               title: str | None = None) -> None:
    if title is None and _plain():
        grid = [[header for _, header in columns],
                *([_cell(row.get(key)) for key, _ in columns] for row in rows)]
        text = plain_table(grid, _console_width())
        if text is not None:
            sys.stdout.write(text)
            return
    from rich.table import Table
    from rich.text import Text
    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for _, header in columns:
        table.add_column(header)
    for row in rows:
        # Text, not markup: "[resources] …" in a reason must print as written.
        table.add_row(*(Text(_cell(row.get(key))) for key, _ in columns))
    _console().print(table)


def emit_csv(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    import csv
    writer = csv.writer(sys.stdout)
    writer.writerow([key for key, _ in columns])
    for row in rows:
        writer.writerow([_cell(row.get(key)) for key, _ in columns])


def emit_list(fmt: Fmt, doc: dict[str, Any], key: str,
              columns: Sequence[tuple[str, str]]) -> None:
    """A list document: ``doc[key]`` is the rows; any ``errors`` are per-host failures."""
    if fmt is Fmt.json:
        emit_json(doc)
        return
    if fmt is Fmt.csv:
        emit_csv(doc[key], columns)
    else:
        emit_table(doc[key], columns)
    for err in doc.get("errors", []):
        sys.stderr.write(f"ppec: {err['host']}: {err['message']}\n")


def emit_page(fmt: Fmt, doc: dict[str, Any], key: str,
              columns: Sequence[tuple[str, str]], command: str, **options: object) -> None:
    """A page of a list: in JSON ``next_cursor`` is in the document; for people and CSV the
    command line of the next page goes to stderr (with this page's ``options``), so stdout
    stays the rows."""
    emit_list(fmt, doc, key, columns)
    if fmt is not Fmt.json and doc.get("next_cursor"):
        import shlex
        given = "".join(f" --{k} {shlex.quote(str(v))}" for k, v in options.items() if v)
        sys.stderr.write(f"ppec: more: {command}{given} --cursor {doc['next_cursor']}\n")


def emit_record(fmt: Fmt, doc: dict[str, Any], fields: Sequence[tuple[str, str]] | None = None,
                message: str | None = None) -> None:
    if fmt is Fmt.json:
        emit_json(doc)
        return
    if fmt is Fmt.csv:
        raise PpecError("-o csv is for lists; use -o json", code="BAD_INPUT")
    if message:
        emit_line(message)
    if fields:
        emit_table([{"k": label, "v": doc.get(key)} for key, label in fields],
                   [("k", "field"), ("v", "value")])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value)) or "-"
    return str(value)


def error_line(fmt: Fmt, message: str, code: str) -> None:
    """A failure that is not an exception (placement found nothing, one host of several
    failed), printed as errors print, with its own code."""
    if fmt is Fmt.json:
        sys.stderr.write(json.dumps({"error": {"code": code, "message": message}}) + "\n")
    else:
        sys.stderr.write(f"ppec: {message}\n")


def error(e: PpecError, fmt: Fmt) -> None:
    if fmt is Fmt.json:
        sys.stderr.write(json.dumps({"error": {"code": e.code, "message": str(e),
                                               "host": e.host, "details": e.details}},
                                    default=str) + "\n")
    else:
        sys.stderr.write(f"ppec: error: {e}\n")


def format_in(args: Sequence[str]) -> Fmt:
    """The -o/--output a command line asks for, read before (or without) parsing it, so
    that even a usage error comes out in the format the caller reads."""
    for i, arg in enumerate(args):
        value = None
        if arg in ("-o", "--output") and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--output="):
            value = arg.split("=", 1)[1]
        elif arg.startswith("-o") and len(arg) > 2 and not arg.startswith("--"):
            value = arg[2:]
        if value is not None and value.lower() in {f.value for f in Fmt}:
            return Fmt(value.lower())
    return Fmt.table


def host_errors(failed: Sequence[HostResult]) -> list[dict[str, Any]]:
    return [{"host": r.host, "code": r.error.code if r.error else "FAILED",
             "message": r.error.message if r.error else ""} for r in failed]
