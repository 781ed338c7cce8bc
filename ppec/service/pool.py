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
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from ppec.core.errors import PpecError
from ppec.operator.fleet.client import AgentClient, HostResult, Reach
from ppec.operator.store import Host


@dataclass
class _Slot:
    client: AgentClient
    lock: threading.Lock = field(default_factory=threading.Lock)


class HostPool:
    def __init__(self, reach: Reach, workers: int) -> None:
        self.reach = reach
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._guard = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="host")

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
            return slot.client.call(method)

    def ask(self, hosts: Iterable[Host], method: str, stop: threading.Event,
            lane: str = "snapshots") -> Iterator[HostResult]:
        """``method`` on every host through the pool, results as they arrive. When
        ``stop`` is set, hosts not yet started are dropped."""
        def one(host: Host) -> HostResult:
            if stop.is_set():
                return HostResult(host.name, False,
                                  error=PpecError("abandoned: the service is stopping",
                                                  code="STOPPING"))
            try:
                return HostResult(host.name, True, self.call(host, method, lane))
            except PpecError as e:
                e.host = e.host or host.name
                return HostResult(host.name, False, error=e)

        futures: list[Future[HostResult]] = [self._executor.submit(one, h) for h in hosts]
        try:
            for f in as_completed(futures):
                if stop.is_set():
                    break
                yield f.result()
        finally:
            for f in futures:
                f.cancel()

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
        with self._guard:
            slots = list(self._slots.values())
            self._slots.clear()
        for slot in slots:
            with contextlib.suppress(Exception):
                slot.client.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
