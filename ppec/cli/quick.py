"""Commands answered without loading the CLI framework.

typer and its click take about 30 ms of every command to import, as much as the agent
takes to attach a disk; runbooks call the per-VM disk verbs, and ``vm show``, ``start``
and ``stop``, in loops. For those verbs, a command line that needs no help, no completion
and no usage error is parsed here, from the table below, and runs the very functions the
typer commands run (``ppec.cli.disk_verbs`` and ``vm_verbs``, through
``ppec.cli.run.invoke``). Anything this parser is not sure of, it leaves to typer:
``parse`` answers None, and ``ppec.cli.main`` parses the line as always, so help, usage
errors and their exit codes stay typer's alone.

The table restates what the typer declarations say (names, flags, types, ranges,
defaults). tests/cli/test_quick.py holds the two equal, and holds that every command line
parsed here gets the same values from click.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

from ppec.cli.output import Fmt
from ppec.cli.run import Run, State, invoke


# NamedTuples, not dataclasses: a frozen dataclass costs ~0.5 ms to define, and this module
# is on the path of every quick command.
class Opt(NamedTuple):
    flags: tuple[str, ...]             # as typer declares them, e.g. ("-o", "--output")
    dest: str                          # the body's keyword
    kind: str = "str"                  # str | int | flag | choice
    default: Any = None
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None


class Quick(NamedTuple):
    module: str                        # where the body lives (typer-free)
    body: str
    args: tuple[str, ...]              # positional arguments, in order
    opts: tuple[Opt, ...]


HOST = Opt(("--host",), "host")
OUTPUT = Opt(("-o", "--output"), "fmt", "choice", "table", tuple(f.value for f in Fmt))
DISK, VM = "ppec.cli.disk_verbs", "ppec.cli.vm_verbs"
QUICK: dict[tuple[str, str], Quick] = {
    ("disk", "list"): Quick(DISK, "list_", ("vm",), (HOST, OUTPUT)),
    ("disk", "attach"): Quick(DISK, "attach", ("vm",), (
        Opt(("--size",), "size"), Opt(("--path",), "path"),
        Opt(("--bus",), "bus", "choice", "virtio", ("virtio", "scsi")), HOST, OUTPUT)),
    ("disk", "detach"): Quick(DISK, "detach", ("vm", "target"), (
        Opt(("--timeout",), "timeout", "int", 20, minimum=1, maximum=300),
        Opt(("--keep-volume",), "keep_volume", "flag", False), HOST, OUTPUT)),
    ("vm", "show"): Quick(VM, "show", ("name",), (
        HOST, Opt(("--xml",), "xml", "flag", False), Opt(("--tuning",), "tuning", "flag",
                                                        False), OUTPUT)),
    ("vm", "start"): Quick(VM, "start", ("name",), (HOST, OUTPUT)),
    # typer also takes --no-force; this table does not, so such a line goes to typer.
    ("vm", "stop"): Quick(VM, "stop", ("name",), (
        Opt(("--force",), "force", "flag", False),
        Opt(("--timeout",), "timeout", "int", 60, minimum=1, maximum=3600), HOST, OUTPUT)),
}
GLOBALS = ("--db", "--identity")   # the root options that take a value


class Parsed(NamedTuple):
    quick: Quick
    state: State
    args: tuple[str, ...]
    kwargs: dict[str, Any]


def parse(argv: Sequence[str]) -> Parsed | None:
    """The command line as the quick table reads it, or None for typer to parse."""
    given: dict[str, str] = {}
    debug = False
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        flag, eq, value = argv[i].partition("=")
        if argv[i] == "--debug" and not debug:
            debug = True
        elif flag in GLOBALS and flag not in given and (eq or i + 1 < len(argv)):
            if not eq:
                i += 1
                value = argv[i]
            if not value or value.startswith("-"):
                return None
            given[flag] = value
        else:
            return None
        i += 1
    quick = QUICK.get((argv[i], argv[i + 1])) if i + 1 < len(argv) else None
    if quick is None:
        return None
    line = _command_line(quick, argv[i + 2:])
    if line is None:
        return None
    args, values = line
    state = State(db=given.get("--db") or os.environ.get("PPEC_DB") or None, debug=debug,
                  identity=given.get("--identity") or os.environ.get("PPEC_IDENTITY") or None)
    return Parsed(quick, state, args, {**values, "fmt": Fmt(values["fmt"])})


def _command_line(quick: Quick, rest: Sequence[str]
                  ) -> tuple[tuple[str, ...], dict[str, Any]] | None:
    """(positional arguments, option values with defaults), or None for typer."""
    by_flag = {flag: opt for opt in quick.opts for flag in opt.flags}
    values: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(rest):
        token = rest[i]
        if not token.startswith("-"):
            positional.append(token)
            i += 1
            continue
        flag, eq, value = token.partition("=")
        opt = by_flag.get(flag)
        if opt is None or opt.dest in values or (eq and not flag.startswith("--")):
            return None   # unknown, repeated, -o=x: typer's to read (or refuse)
        if opt.kind == "flag":
            if eq:
                return None
            values[opt.dest] = True
            i += 1
            continue
        if not eq:
            if i + 1 >= len(rest):
                return None
            i += 1
            value = rest[i]
        converted = _value(opt, value)
        if converted is None:
            return None
        values[opt.dest] = converted
        i += 1
    if len(positional) != len(quick.args):
        return None
    return tuple(positional), {opt.dest: values.get(opt.dest, opt.default)
                               for opt in quick.opts}


def _value(opt: Opt, value: str) -> Any:
    """The option's value, or None when typer should judge it (including refusing it)."""
    if not value or value.startswith("-"):
        return None
    if opt.kind == "choice":
        return value if value in opt.choices else None
    if opt.kind == "int":
        if not (value.isascii() and value.isdigit()):
            return None
        number = int(value)
        if (opt.minimum is not None and number < opt.minimum) or \
                (opt.maximum is not None and number > opt.maximum):
            return None
        return number
    return value


def run(argv: Sequence[str]) -> int | None:
    """Run a quick command line: its exit code; None when typer must parse it."""
    if "_PPEC_COMPLETE" in os.environ:
        return None
    parsed = parse(argv)
    if parsed is None:
        return None
    body = getattr(importlib.import_module(parsed.quick.module), parsed.quick.body)
    try:
        return invoke(body, Run(parsed.state, parsed.kwargs["fmt"]), parsed.args,
                      parsed.kwargs)
    except KeyboardInterrupt:   # what typer's main makes of Ctrl-C: exit 130, no words
        return 130
