"""Interactive consoles: who holds which VM's console, and the byte relay of one session.

The wire step (docs/design.md, "Console"): after the agent answers ``vm.console`` with
``{"stream": "console", …}``, the connection carries raw bytes both ways between the
client and the domain's serial console until either side closes it. The relay runs in the
connection's own thread (the server has one per connection) and holds no host lock, so a
console never blocks other requests.

One console per VM: the registry refuses a second (``CONSOLE_BUSY``, naming the holder)
unless it is forced; a forced one tells the old holder in its stream and ends it.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Any

from ppec.agent.hvconsole import ConsoleStream
from ppec.core.clock import utc_now
from ppec.core.errors import Conflict, PpecError

log = logging.getLogger(__name__)
# A client that accepts no console output for this long is taken for gone.
CLIENT_STALL = 60.0
Opener = Callable[[str, bool], ConsoleStream]


def notice(text: str) -> bytes:
    """A line ppec itself writes into a console stream (on a line of its own)."""
    return f"\r\n[ppec: {text}]\r\n".encode()


class Streaming(dict[str, Any]):
    """A handler's answer that switches its connection to a byte stream: the dict is the
    reply's ``result``; once it has been sent the server calls ``relay(sock)``, or
    ``cancel()`` when the reply could not be sent. ``request_id`` (set by the server) is
    for a stream that ends with a reply line of its own (``image.upload``)."""

    def __init__(self, result: dict[str, Any], relay: Callable[[socket.socket], None],
                 cancel: Callable[[], None]) -> None:
        super().__init__(result)
        self.relay = relay
        self.cancel = cancel
        self.request_id: Any = None


class Session:
    """One client's hold on one VM's console."""

    def __init__(self, vm: str, client: str, stream: ConsoleStream,
                 release: Callable[[Session], None]) -> None:
        self.vm, self.client, self.since = vm, client, utc_now()
        self.stream = stream
        self._release = release
        self.taken_by: str | None = None   # set when a forced console replaces this one

    def holder(self) -> dict[str, str]:
        return {"client": self.client, "since": self.since}

    def cancel(self) -> None:
        self.stream.close()
        self._release(self)

    def relay(self, sock: socket.socket) -> None:
        """Bytes both ways until the client closes, the console ends, or a forced console
        takes over; then the console is released."""
        why = "?"
        sel = selectors.DefaultSelector()
        try:
            sock.settimeout(CLIENT_STALL)
            sel.register(sock, selectors.EVENT_READ, "client")
            sel.register(self.stream.fileno(), selectors.EVENT_READ, "console")
            why = self._pump(sel, sock)
        except (OSError, PpecError) as e:
            why = f"relay failed: {e}"
        finally:
            sel.close()
            self.cancel()
            log.info("console of %s (%s) closed: %s", self.vm, self.client, why)

    def _pump(self, sel: selectors.BaseSelector, sock: socket.socket) -> str:
        log.info("console of %s opened by %s", self.vm, self.client)
        while True:
            for key, _ in sel.select():
                if key.data == "client":
                    data = sock.recv(65536)
                    if not data:
                        return "the client closed the connection"
                    try:
                        self.stream.send(data)
                    except PpecError:
                        # The console ended under the typing: the console side below says
                        # why, in the stream, once libvirt's event arrives.
                        if self.stream.ended is None and self.taken_by is None:
                            raise
                    continue
                self.stream.drain_wake()
                out = self.stream.take()
                if out:
                    sock.sendall(out)
                if self.taken_by is not None:
                    sock.sendall(notice(f"console of {self.vm} taken over by "
                                        f"{self.taken_by} (--force); disconnected"))
                    return f"taken over by {self.taken_by}"
                if self.stream.ended is not None:
                    sock.sendall(notice(f"console of {self.vm} closed: {self.stream.ended}"))
                    return self.stream.ended


class Consoles:
    """Which VM's console is held by whom, in this agent process."""

    def __init__(self, opener: Opener) -> None:
        self._opener = opener
        self._lock = threading.Lock()
        self._held: dict[str, Session] = {}

    def open(self, vm: str, force: bool, client: str) -> tuple[Session, Session | None]:
        """A new session on ``vm``'s console, and the session it replaced (forced)."""
        with self._lock:
            old = self._held.get(vm)
            if old is not None and not force:
                raise Conflict(f"the console of {vm} is in use by {old.client} since "
                               f"{old.since}; `ppec vm console {vm} --force` takes it over",
                               code="CONSOLE_BUSY", details={"holder": old.holder()})
            if old is not None:
                # Before libvirt ends its stream, so the old relay tells its client why.
                old.taken_by = client
            try:
                stream = self._opener(vm, force)
            except BaseException:
                if old is not None:
                    old.taken_by = None
                raise
            session = Session(vm, client, stream, self._release)
            self._held[vm] = session
        if old is not None:
            old.stream.wake()
        return session, old

    def _release(self, session: Session) -> None:
        with self._lock:
            if self._held.get(session.vm) is session:
                del self._held[session.vm]

    def holders(self) -> dict[str, dict[str, str]]:
        with self._lock:
            return {vm: s.holder() for vm, s in self._held.items()}
