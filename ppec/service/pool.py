"""Warm connections and a bounded worker pool over them.

One ``AgentClient`` per host lives across rounds, so a round costs a request on an open
SSH channel, not a handshake. A fixed number of worker threads (``workers``) serve every
job and every host: 10,000 hosts are 10,000 small client objects, not 10,000 threads.
A connection is one stream (one request at a time), so each host has two: one for
snapshots and one for the checks (drift, agent files). ``drift.check`` waits for the
agent's host lock, which a ``vm create`` may hold for a minute; snapshots, which take no
lock, must not queue behind it on the same stream.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any

from ppec.core.errors import PpecError
from ppec.operator.fleet.client import AgentClient, HostResult, Reach
from ppec.operator.fleet.transport import Stream
from ppec.operator.store import Host


@dataclass
class _Slot:
    client: AgentClient
    lock: threading.Lock = field(default_factory=threading.Lock)


class Workers:
    """A fixed set of daemon threads running submitted calls. Not ThreadPoolExecutor:
    its threads are joined at interpreter exit, so one call stuck on a dead host (a
    drift check waits up to 600 s) would keep a stopped service from exiting."""

    def __init__(self, count: int) -> None:
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = \
            queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._loop, name=f"host-{i}", daemon=True)
                         for i in range(count)]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((future, fn))
        return future

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as e:   # handed to the waiter, as an executor does
                future.set_exception(e)

    def shutdown(self) -> None:
        """Drop what has not started; each thread ends after its current call."""
        with contextlib.suppress(queue.Empty):
            while (item := self._queue.get_nowait()) is not None:
                item[0].cancel()
        for _ in self._threads:
            self._queue.put(None)


class HostPool:
    def __init__(self, reach: Reach, workers: int, grace: float = 5.0) -> None:
        self.reach = reach
        self.grace = grace
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._guard = threading.Lock()
        self._workers = Workers(workers)
        self._loose: weakref.WeakSet[Stream] = weakref.WeakSet()   # fresh_client's streams
        self._closed = False

    def _slot(self, host: Host, lane: str) -> _Slot:
        with self._guard:
            slot = self._slots.get((host.name, lane))
            if slot is None or slot.client.host != host:
                if slot is not None:   # the inventory changed the address, key or port
                    slot.client.close()
                slot = self._slots[host.name, lane] = _Slot(AgentClient(host, self.reach))
            return slot

    def call(self, host: Host, method: str, lane: str = "snapshots") -> Any:
        """``method`` on ``host``'s warm connection for ``lane`` (opened or re-opened as
        needed; the client drops a connection after any transport error)."""
        slot = self._slot(host, lane)
        with slot.lock:
            try:
                return slot.client.call(method)
            finally:
                if self._closed:   # opened while the pool was closing: close it too
                    slot.client.close()

    def ask(self, hosts: Iterable[Host], method: str, stop: threading.Event,
            lane: str = "snapshots") -> Iterator[HostResult]:
        """``method`` on every host through the pool, results as they arrive. Once
        ``stop`` is set, hosts not yet started are dropped and calls in flight get
        ``grace`` seconds; what is still out then is abandoned (never reported as a
        failure: the host did nothing wrong)."""
        return self.map(hosts, lambda host: self.call(host, method, lane), stop)

    def map(self, hosts: Iterable[Host], fn: Callable[[Host], Any], stop: threading.Event,
            at_once: int | None = None) -> Iterator[HostResult]:
        """``fn(host)`` for every host on the pool's workers, results as they arrive, as
        ``ask`` does. With ``at_once``, at most that many are handed to the workers at a
        time, so long calls (an image push) leave the other workers to the other jobs."""
        def one(host: Host) -> HostResult | None:
            if stop.is_set():
                return None
            try:
                return HostResult(host.name, True, fn(host))
            except PpecError as e:
                e.host = e.host or host.name
                return HostResult(host.name, False, error=e)

        todo = iter(hosts)
        pending: set[Future[HostResult | None]] = set()

        def feed() -> None:
            while not stop.is_set() and (at_once is None or len(pending) < at_once):
                host = next(todo, None)
                if host is None:
                    return
                pending.add(self._workers.submit(functools.partial(one, host)))

        feed()
        deadline: float | None = None
        try:
            while pending:
                if stop.is_set():
                    deadline = deadline or time.monotonic() + self.grace
                    if time.monotonic() >= deadline:
                        return
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                feed()
                for f in done:
                    result = None if f.cancelled() else f.result()
                    # After stop, a failure may be our own closing of the connection.
                    if result is not None and (result.ok or not stop.is_set()):
                        yield result
        finally:
            for f in pending:
                f.cancel()

    def fresh_client(self, host: Host) -> AgentClient:
        """A connection of its own for one long call that takes the stream over (an image
        push), outside the warm ones; ``close`` closes it too, if it is still open."""
        client = AgentClient(host, self.reach)
        opener = client.opener

        def tracked() -> Stream:
            stream = opener()
            self._loose.add(stream)
            if self._closed:
                stream.close()
            return stream

        client.opener = tracked
        return client

    def retain(self, names: set[str]) -> None:
        """Close connections to hosts no longer in the inventory."""
        with self._guard:
            gone = [key for key in self._slots if key[0] not in names]
            slots = [self._slots.pop(n) for n in gone]
        for slot in slots:
            slot.client.close()

    def close(self) -> None:
        """Close every connection (this also wakes calls blocked on a dead host) and
        stop the workers."""
        self._closed = True
        with self._guard:
            slots = list(self._slots.values())
            self._slots.clear()
        for slot in slots:
            with contextlib.suppress(Exception):
                slot.client.close()
        for stream in list(self._loose):
            with contextlib.suppress(Exception):
                stream.close()
        self._workers.shutdown()
