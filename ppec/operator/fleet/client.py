"""Talk protocol v1 to one host's agent over whichever stream reaches it."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, TypeVar

from ppec.core.errors import PpecError, ProtocolError, TransportError, from_wire
from ppec.operator.fleet.reach import Reach
from ppec.operator.fleet.transport import LineReader, LocalStream, Stream
from ppec.operator.store import Host
from ppec.wire import protocol
from ppec.wire.methods import client_timeout

T = TypeVar("T")
__all__ = ["AgentClient", "HostResult", "Reach", "fan_out"]


class AgentClient:
    """One connection per host per command, opened on first use."""

    def __init__(self, host: Host, reach: Reach, *, accept_new_host_key: bool = False,
                 opener: Callable[[], Stream] | None = None) -> None:
        self.host = host
        self.reach = reach
        self.accept_new_host_key = accept_new_host_key
        self.opener = opener or self._connect
        self._stream: Stream | None = None
        self._reader: LineReader | None = None
        self._ids = itertools.count(1)

    def _connect(self) -> Stream:
        if self.host.is_local:
            return LocalStream(self.host.socket, self.reach.connect_timeout)
        from ppec.operator.fleet.ssh import SSHStream  # paramiko only when SSH is used
        return SSHStream(address=self.host.address, port=self.host.port,
                         username=self.host.username, identity=self.host.identity,
                         known_hosts=self.reach.known_hosts, command=self.reach.command,
                         timeout=self.reach.connect_timeout,
                         accept_new_host_key=self.accept_new_host_key)

    def _open(self) -> LineReader:
        if self._reader is None:
            self._stream = self.opener()
            self._reader = LineReader(self._stream, self.host.name)
        return self._reader

    def call(self, method: str, approval: dict[str, Any] | None = None, **params: Any) -> Any:
        try:
            return self._call(method, params, approval)
        except PpecError as e:
            e.host = e.host or self.host.name
            if isinstance(e, TransportError):
                self.close()  # the stream is in an unknown state; never reuse it
            raise

    def _call(self, method: str, params: dict[str, Any],
              approval: dict[str, Any] | None = None) -> Any:
        timeout = client_timeout(method, params)
        reader = self._open()
        msg_id = next(self._ids)
        assert self._stream is not None
        message = protocol.request(msg_id, method, params)
        if approval is not None:
            message["approval"] = approval
        self._stream.send(protocol.encode(message), timeout)
        reply = protocol.decode(reader.readline(timeout))
        if reply.get("id") not in (msg_id, None) or reply.get("v") != protocol.VERSION:
            raise ProtocolError(f"unexpected reply {str(reply)[:200]}")
        if reply.get("ok") is True:
            return reply.get("result")
        error = reply.get("error")
        raise from_wire(error if isinstance(error, dict) else {}, host=None)

    def take_stream(self) -> tuple[Stream, bytes]:
        """After a reply that switched the connection to a byte stream (``vm.console``):
        the stream and the bytes already read past the reply; the client forgets both
        (its next call opens a new connection) and the caller closes the stream."""
        assert self._stream is not None and self._reader is not None, "no call made"
        taken = (self._stream, self._reader.take_rest())
        self._stream = self._reader = None
        return taken

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._stream = self._reader = None


class HostResult(NamedTuple):   # not a dataclass: ~0.5 ms less on every agent call
    host: str
    ok: bool
    value: Any = None
    error: PpecError | None = None


def fan_out(hosts: Iterable[Host], fn: Callable[[Host], T], max_workers: int = 32,
            on_result: Callable[[HostResult], None] | None = None) -> list[HostResult]:
    """Run ``fn`` per host in parallel (at most ``max_workers`` at once); one host's failure
    never hides another's answer. ``on_result`` sees each result as it arrives (progress);
    the list returned is in the hosts' order."""
    hosts = list(hosts)
    if not hosts:
        return []

    def one(host: Host) -> HostResult:
        try:
            return HostResult(host.name, True, fn(host))
        except PpecError as e:
            e.host = e.host or host.name
            return HostResult(host.name, False, error=e)

    if len(hosts) == 1:   # no pool (nor its import, ~5 ms) for the one-host commands
        result = one(hosts[0])
        if on_result is not None:
            on_result(result)
        return [result]
    from concurrent.futures import ThreadPoolExecutor, as_completed
    with ThreadPoolExecutor(max_workers=min(max_workers, len(hosts))) as pool:
        futures = [pool.submit(one, h) for h in hosts]
        if on_result is not None:
            for f in as_completed(futures):
                on_result(f.result())
        return [f.result() for f in futures]
