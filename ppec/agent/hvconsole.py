"""A domain's serial console through libvirt: virDomainOpenConsole on a non-blocking
virStream.

The companion of ``hypervisor.py`` for streams (that module is the libvirt boundary for
everything else and is full): libvirt's errors become ppec errors here too. libvirt calls
back from its event-loop thread (which ``Hypervisor`` runs) when console bytes arrive;
they are buffered here and the owner is woken through a pipe, so the owner's thread does
every socket write and every send to the guest, and a slow client never stalls libvirt's
event loop (which also delivers the disk-removal events).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

import libvirt

from ppec.agent.hypervisor import Hypervisor
from ppec.core.errors import Conflict, HypervisorError

# Bytes buffered for a client that is not reading; past this libvirt keeps the rest (and
# the guest's UART waits), instead of this process growing.
MAX_BUFFERED = 1 << 20
SEND_PATIENCE = 10.0   # seconds a send to the guest may wait for the stream to drain
_EVENTS = libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP


class ConsoleStream:
    """One open console of one domain."""

    def __init__(self, stream: libvirt.virStream, name: str) -> None:
        self.name = name
        self._stream = stream
        self._lock = threading.Lock()
        self._chunks: list[bytes] = []
        self._size = 0
        self._paused = False
        self.ended: str | None = None      # why the console stopped, once it has
        self._closed = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        stream.eventAddCallback(libvirt.VIR_STREAM_EVENT_READABLE | _EVENTS, self._on_event,
                                None)

    def fileno(self) -> int:
        """Readable when there is something to take (bytes, or the end)."""
        return self._wake_r

    def wake(self) -> None:
        # Under the lock, and never after close(): a closed descriptor's number may already
        # name another file, which must not get this byte.
        with self._lock:
            if self._closed:
                return
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wake_w, b"!")

    def _on_event(self, stream: libvirt.virStream, events: int, _opaque: Any) -> None:
        with self._lock:
            if events & libvirt.VIR_STREAM_EVENT_READABLE:
                self._read_available(stream)
            if events & _EVENTS and self.ended is None:
                self.ended = "the console stream was closed by libvirt"
        self.wake()

    def _read_available(self, stream: libvirt.virStream) -> None:
        while self.ended is None and self._size < MAX_BUFFERED:
            try:
                data = stream.recv(65536)
            except libvirt.libvirtError as e:
                self.ended = f"console lost: {e.get_error_message()}"
                return
            if data == -2:   # nothing more for now
                return
            if not data:
                self.ended = f"{self.name} stopped"
                return
            self._chunks.append(data)
            self._size += len(data)
        if self._size >= MAX_BUFFERED and not self._paused:
            self._paused = True
            self._update(_EVENTS)

    def _update(self, events: int) -> None:
        try:
            self._stream.eventUpdateCallback(events)
        except libvirt.libvirtError as e:
            self.ended = self.ended or f"console lost: {e.get_error_message()}"

    def drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass

    def take(self) -> bytes:
        """Everything buffered so far (and listen again if the buffer was full)."""
        with self._lock:
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._size = 0
            if self._paused and self.ended is None:
                self._paused = False
                self._update(libvirt.VIR_STREAM_EVENT_READABLE | _EVENTS)
        return data

    def send(self, data: bytes) -> None:
        """Type ``data`` into the console (raises HypervisorError once it has ended)."""
        view = memoryview(data)
        deadline = time.monotonic() + SEND_PATIENCE
        while view:
            try:
                sent = self._stream.send(bytes(view))
            except libvirt.libvirtError as e:
                raise HypervisorError(f"console of {self.name}: {e.get_error_message()}",
                                      code="CONSOLE_LOST") from None
            if sent == -2:   # the stream is full: the guest is not reading yet
                if time.monotonic() > deadline:
                    raise HypervisorError(f"console of {self.name}: the guest took no input "
                                          f"for {SEND_PATIENCE:.0f}s", code="CONSOLE_LOST")
                time.sleep(0.01)
                continue
            view = view[sent:]

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self._stream.eventRemoveCallback()
        with contextlib.suppress(libvirt.libvirtError):
            self._stream.abort()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)


def open_console(hv: Hypervisor, name: str, force: bool) -> ConsoleStream:
    """Open ``name``'s serial console; ``force`` takes it from whoever holds it (libvirt
    ends the other stream)."""
    flags = libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0

    def open_(conn: libvirt.virConnect) -> ConsoleStream:
        stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        try:
            conn.lookupByName(name).openConsole(None, stream, flags)
            return ConsoleStream(stream, name)
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise

    try:
        # The connection's error mapping (NOT_FOUND, LIBVIRT) is Hypervisor.call's.
        return hv.call(f"open the console of {name}", open_)
    except HypervisorError as e:
        if "Active console session" in str(e.details.get("libvirt_message", "")):
            # Someone outside ppec (virsh console on the host) holds it.
            raise Conflict(f"the console of {name} is held outside ppec (virsh console on "
                           f"the host?); --force takes it over", code="CONSOLE_BUSY",
                           details={"holder": "outside ppec"}) from None
        raise
