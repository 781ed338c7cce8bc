"""Byte streams to an agent. ``LocalStream`` here; ``SSHStream`` in ``ppec.operator.fleet.ssh`` so
commands that never reach a remote host do not import paramiko."""

from __future__ import annotations

import socket
from typing import Protocol

from ppec.core.errors import ProtocolError, TransportError
from ppec.wire.protocol import MAX_LINE


class Stream(Protocol):
    def send(self, data: bytes, timeout: float) -> None: ...
    def recv(self, timeout: float) -> bytes: ...
    def close(self) -> None: ...


class LineReader:
    """Split a stream into lines, enforcing the protocol's line limit."""

    def __init__(self, stream: Stream, where: str) -> None:
        self.stream = stream
        self.where = where
        self._buf = b""

    def readline(self, timeout: float) -> bytes:
        while b"\n" not in self._buf:
            if len(self._buf) > MAX_LINE:
                raise ProtocolError(f"{self.where}: reply longer than {MAX_LINE} bytes")
            chunk = self.stream.recv(timeout)
            if not chunk:
                raise TransportError(f"{self.where}: connection closed by the agent",
                                     code="AGENT_UNREACHABLE")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def take_rest(self) -> bytes:
        """What was read past the last line (the start of a byte stream)."""
        rest, self._buf = self._buf, b""
        return rest


class LocalStream:
    """The agent's Unix socket on this machine (host address ``local``)."""

    def __init__(self, path: str, timeout: float) -> None:
        self.where = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except FileNotFoundError:
            self.sock.close()
            raise TransportError(f"agent not running: no socket at {path}",
                                 code="AGENT_UNREACHABLE") from None
        except ConnectionRefusedError:
            self.sock.close()
            raise TransportError(f"agent not running: nothing listens on {path} "
                                 f"(stale socket)", code="AGENT_UNREACHABLE") from None
        except OSError as e:
            self.sock.close()
            raise TransportError(f"agent not reachable at {path}: {e.strerror or e}",
                                 code="AGENT_UNREACHABLE") from None

    def send(self, data: bytes, timeout: float) -> None:
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise TransportError(f"{self.where}: send failed: {e}",
                                 code="AGENT_UNREACHABLE") from None

    def recv(self, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            raise TransportError(f"{self.where}: no reply within {timeout:.0f}s",
                                 code="TIMEOUT") from None
        except OSError as e:
            raise TransportError(f"{self.where}: receive failed: {e}",
                                 code="AGENT_UNREACHABLE") from None

    def close(self) -> None:
        self.sock.close()
