"""A VM's serial console from the operator's side: its log (``vm logs [--follow]``) and an
interactive session (``vm console``), over the connection every other call uses.

The session is a protocol step (docs/design.md, "Console"): ``vm.console`` is answered
with one JSON line, then the same connection (SSH channel, or the local socket) carries
raw bytes both ways. ``relay`` moves them between that stream and two file descriptors;
putting a terminal in raw mode is the CLI's business.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ppec.core.errors import PpecError, TransportError
from ppec.operator.context import Context, locate
from ppec.operator.fleet.transport import Stream

ESCAPE = 0x1D            # Ctrl-], as telnet and virsh console
FOLLOW_INTERVAL = 0.5    # seconds between asks while nothing new came
RECONNECT_FOR = 30.0     # seconds `--follow` keeps trying a host that went away


def logs(ctx: Context, name: str, *, lines: int = 50, cursor: str | None = None,
         host: str | None = None) -> dict[str, Any]:
    """The last ``lines`` lines of the VM's console log (0: from the start), or with
    ``cursor`` what came after it; ``more`` says there is more to ask for at once."""
    target = locate(ctx, name, host)
    params: dict[str, Any] = {"name": name, "lines": lines}
    if cursor is not None:
        params["cursor"] = cursor
    return {**ctx.client(target).call("vm.logs", **params), "host": target.name}


def follow(ctx: Context, name: str, emit: Callable[[dict[str, Any]], None], *,
           lines: int = 50, host: str | None = None, stop: threading.Event | None = None,
           interval: float = FOLLOW_INTERVAL) -> None:
    """``emit`` each piece of the log as it grows, until ``stop`` is set (or Ctrl-C).
    The cursor names a place in a file, so a host that restarts its agent or drops the
    connection is asked again from the same place (for up to RECONNECT_FOR seconds)."""
    stop = stop or threading.Event()
    doc = logs(ctx, name, lines=lines, host=host)
    emit(doc)
    lost_since: float | None = None
    while not stop.is_set():
        if not doc["more"]:
            stop.wait(interval)
            if stop.is_set():
                return
        try:
            nxt = logs(ctx, name, cursor=doc["cursor"], host=host)
        except TransportError:
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since > RECONNECT_FOR:
                raise
            stop.wait(1.0)
            continue
        lost_since = None
        if nxt["text"] or nxt["reset"]:
            emit(nxt)
        doc = nxt


@dataclass
class Link:
    """An open console: the byte stream, the bytes already read past the reply, and the
    agent's answer (``took_over``: whose session a --force ended)."""

    stream: Stream
    early: bytes
    answer: dict[str, Any]
    host: str


def client_label() -> str:
    """Who holds a console, as the next one to ask is told."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"[:100]


def open_console(ctx: Context, name: str, *, force: bool = False, host: str | None = None,
                 approval: dict[str, Any] | None = None) -> Link:
    target = locate(ctx, name, host)
    client = ctx.client(target)
    answer = client.call("vm.console", approval=approval, name=name, force=force,
                         client=client_label())
    if not isinstance(answer, dict) or answer.get("stream") != "console":
        client.close()
        raise PpecError(f"{target.name}: the agent did not switch to a console stream",
                        code="PROTOCOL")
    stream, early = client.take_stream()
    return Link(stream, early, answer, target.name)


def approved_console(ctx: Context, signer: Any, name: str, host: str | None = None
                     ) -> tuple[str, int | None, dict[str, Any]]:
    """Under maker-checker: ("use", id, envelope) for the caller's approved console request,
    now marked executed; ("new", None, request) after making one; ("pending", None,
    request) when the caller's request still waits for a checker."""
    from ppec.operator import makerchecker  # signing and audit: only under such a policy
    mine = makerchecker.mine(ctx, signer, "vm.console", name)
    if mine is None:
        return "new", None, makerchecker.request_vm_console(ctx, signer, name, host)
    if mine["state"] == "pending":
        return "pending", None, mine
    who, _ = signer.whoami(makerchecker.approvers(ctx))
    return "use", int(mine["id"]), makerchecker.use_approved(ctx, int(mine["id"]), who.name)


def relay(link: Link, stdin_fd: int, stdout_fd: int, escape: int = ESCAPE) -> str:
    """Bytes between the console and the two descriptors until the escape byte or end of
    input ("left"), or until the host side closes ("closed"). A thread reads the stream
    (the Stream interface is blocking, with a timeout), this one reads ``stdin_fd``."""
    done = threading.Event()
    why: list[str] = []
    _write_all(stdout_fd, link.early)

    def from_console() -> None:
        try:
            while not done.is_set():
                try:
                    data = link.stream.recv(0.5)
                except TransportError as e:
                    if e.code == "TIMEOUT":
                        continue
                    raise
                if not data:
                    break
                _write_all(stdout_fd, data)
        except (PpecError, OSError):
            pass
        if not done.is_set():
            why.append("closed")
            done.set()

    reader = threading.Thread(target=from_console, name="console-in", daemon=True)
    reader.start()
    try:
        _from_input(link, stdin_fd, escape, done)
    finally:
        done.set()
        reader.join(timeout=2)
    return why[0] if why else "left"


def _from_input(link: Link, fd: int, escape: int, done: threading.Event) -> None:
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while not done.is_set():
            if not sel.select(0.2):
                continue
            data = os.read(fd, 4096)
            head, hit, _ = data.partition(bytes([escape]))
            if head:
                try:
                    link.stream.send(head, 30.0)
                except PpecError:
                    return   # the console side has ended; the reader says so
            if hit or not data:
                return


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def close(link: Link) -> None:
    with contextlib.suppress(Exception):
        link.stream.close()

