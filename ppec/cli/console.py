"""``ppec vm logs`` and ``ppec vm console``: rendering and the terminal (raw mode, always
restored); the work is ``ppec.operator.console``. Imported only by those two commands."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import typer

from ppec.cli import output
from ppec.cli.output import Fmt
from ppec.cli.run import Run, held
from ppec.core.errors import EXIT_PENDING, PpecError
from ppec.operator import console

# What a guest printed is shown, not obeyed: control characters other than newline and
# tab become caret notation (ESC is "^["), so a log cannot drive the reader's terminal.
_VISIBLE = {c: f"^{chr(c + 64)}" for c in range(32) if c not in (9, 10)}
_VISIBLE.update({127: "^?", 13: ""})
_VISIBLE.update({c: f"\\x{c:02x}" for c in range(0x80, 0xA0)})


def printable(text: str) -> str:
    return text.translate(_VISIBLE)


def logs(run: Run, name: str, *, lines: int, follow: bool, host: str | None,
         fmt: Fmt) -> None:
    if fmt is Fmt.csv:
        raise PpecError("-o csv is for lists; use -o json", code="BAD_INPUT")
    if follow:
        _follow(run, name, lines, host, fmt)
        return
    doc = console.logs(run.ctx, name, lines=lines, host=host)
    text = [doc["text"]]
    while lines == 0 and doc["more"]:   # the whole log: every chunk of it
        doc = {**console.logs(run.ctx, name, cursor=doc["cursor"], host=host),
               "truncated": doc["truncated"]}
        text.append(doc["text"])
    doc["text"] = "".join(text)
    if fmt is Fmt.json:
        output.emit_json(doc)
        return
    _write(doc["text"])
    _notes(doc, name, fmt)


def _follow(run: Run, name: str, lines: int, host: str | None, fmt: Fmt) -> None:
    def emit(doc: dict[str, Any]) -> None:
        if fmt is Fmt.json:   # one JSON document per piece (JSON lines)
            output.emit_json_line(doc)
            return
        _notes(doc, name, fmt)
        _write(doc["text"])

    with contextlib.suppress(KeyboardInterrupt):   # the way to stop following
        console.follow(run.ctx, name, emit, lines=lines, host=host)


def _write(text: str) -> None:
    sys.stdout.write(printable(text))
    sys.stdout.flush()


def _notes(doc: dict[str, Any], name: str, fmt: Fmt) -> None:
    if doc.get("reset"):
        output.error_line(fmt, f"the console log of {name} started over (the VM was "
                               f"re-created?); some output may be missing", "LOG_RESET")
    if doc.get("truncated"):
        output.error_line(fmt, f"older lines of {name}'s log left out (at most 128 KiB per "
                               f"answer); `--lines 0` shows the whole log", "LOG_TRUNCATED")


def open_session(run: Run, name: str, *, force: bool, host: str | None) -> None:
    """Maker-checker first (when policy names vm console), then the session."""
    from ppec.operator import makerchecker
    ctx = run.ctx
    approval: dict[str, Any] | None = None
    request_id: int | None = None
    actor = ""
    if makerchecker.needs(ctx, "vm", "console"):
        state, request_id, doc = console.approved_console(ctx, run.signer(), name, host)
        if state == "pending":
            if run.fmt is Fmt.json:
                output.emit_json(doc)
            else:
                sys.stdout.write(f"request {doc['id']}: vm.console {name} still waits for "
                                 f"a second person's approval\n")
            raise typer.Exit(EXIT_PENDING)
        if state == "new":
            held(run.fmt, doc)
        approval = doc
        actor = str(approval["payload"]["maker"])
    try:
        link = console.open_console(ctx, name, force=force, host=host, approval=approval)
    except PpecError as e:
        if request_id is not None:
            makerchecker.finish(ctx, request_id, actor, None, error=str(e))
        raise
    if request_id is not None:
        makerchecker.finish(ctx, request_id, actor, {"console": name, "host": link.host})
    _session(link, name)


def _session(link: console.Link, name: str) -> None:
    took = link.answer.get("took_over")
    taken = f" (taken over from {took['client']})" if isinstance(took, dict) else ""
    try:
        # Raw before the greeting: keys typed once it shows all go to the guest.
        with raw_terminal(sys.stdin.fileno()):
            sys.stderr.write(f"Connected to the console of {name} on {link.host}{taken}. "
                             f"Leave with Ctrl-].\r\n")
            sys.stderr.flush()
            why = console.relay(link, sys.stdin.fileno(), sys.stdout.fileno())
    finally:
        console.close(link)
    if why == "closed":
        raise PpecError(f"the console of {name} was closed by {link.host} (the VM stopped, "
                        f"or another session took it over with --force)",
                        code="CONSOLE_CLOSED", host=None)
    sys.stderr.write(f"\nLeft the console of {name}.\n")


@contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Keys go to the guest as typed (Ctrl-C included); the terminal's settings come back
    on every way out, a SIGTERM or SIGHUP too."""
    if not os.isatty(fd):
        yield
        return
    import termios
    import tty

    def leave(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    saved = termios.tcgetattr(fd)
    handlers = {s: signal.signal(s, leave) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        # TCSANOW, not setraw's default TCSAFLUSH: keys typed ahead are kept, not dropped.
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        for s, h in handlers.items():
            signal.signal(s, h)
