"""Read-only access to the operator store from many request threads.

SQLite connections belong to the thread that opened them (and psycopg's serialize their
users), so each worker thread opens its own ``Store`` once and keeps it. Every query here
reads one page: bounded by ``LIMIT``, keyed by name, never the whole fleet.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from ppec.core import freshness
from ppec.operator.store import Host, Store
from ppec.operator.store.snaprows import rows_in
from ppec.service.http.brief import Briefs
from ppec.service.http.pages import PageAsk
from ppec.service.http.snapcache import SnapshotCache

HOST_STATES = freshness.STATES

_HOST_COLS = ("name", "address", "port", "username", "identity", "socket", "region", "rack",
              "power_domain", "vrf", "cost", "tags", "drained", "added_at", "power_idle_w",
              "power_max_w")
_VM_COLS = ("name", "host", "state", "vcpus", "memory_mib", "disk_bytes", "image",
            "created_at", "updated_at")
_STATUS_COLS = ("state", "last_ok", "last_attempt", "failures", "error_code", "error")


@dataclass(frozen=True)
class Status:
    """The service's last word on a host's reachability (None fields: never tried)."""

    state: str | None          # ok | failed | None
    last_ok: float | None
    last_attempt: float | None
    failures: int
    error_code: str
    error: str


@dataclass(frozen=True)
class HostRow:
    host: Host
    taken_at: float | None
    status: Status
    changed_at: float | None = None   # ppec's last VM change on the host (core/freshness)


@dataclass(frozen=True)
class VmLine:
    vm: dict[str, Any]
    taken_at: float | None
    status: Status
    spec: str | None = None     # the VM document (JSON text); None before documents
    host_changed_at: float | None = None   # ppec's last VM change on its host


def _host(values: list[Any]) -> Host:
    values[11] = tuple(json.loads(values[11]))
    values[12] = bool(values[12])
    return Host(*values)


def _status(values: list[Any]) -> Status:
    state, last_ok, last_attempt, failures, code, error = values
    return Status(None if state is None else str(state),
                  None if last_ok is None else float(last_ok),
                  None if last_attempt is None else float(last_attempt),
                  int(failures or 0), str(code or ""), str(error or ""))


# The stores a request has taken from the pool, returned when it ends (``Reader.lease``).
# A ContextVar, not thread-local: the middleware runs on the event loop, the endpoint in
# a worker thread, and anyio copies the request's context into that thread.
_leased: ContextVar[list[Store] | None] = ContextVar("ppec_leased", default=None)


class Reader:
    """The store at ``location``, through a small pool of connections (``size``), plus
    the snapshot cache.

    A request holds one connection from its first query to its end (``lease``), so 1,000
    readers cost ``size`` connections to the store, not one per worker thread: the
    team's PostgreSQL has 100 slots for every ppec process. Threads outside a request
    (the snapshot warmer) keep one connection each."""

    def __init__(self, location: str, opener: Callable[[str], Store] = Store,
                 size: int = 4) -> None:
        self.location = location
        self.cache = SnapshotCache()    # whole snapshots: one host's page, VM pages
        self.briefs = Briefs()          # the fleet views' part: lists, /metrics, images
        self._opener = opener
        self._local = threading.local()
        self._opened: list[Store] = []
        self._idle: queue.LifoQueue[Store] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        """The scope of one request: connections it takes go back to the pool after."""
        held: list[Store] = []
        token = _leased.set(held)
        try:
            yield
        finally:
            _leased.reset(token)
            for store in held:
                self._idle.put(store)
                self._slots.release()

    def store(self) -> Store:
        held = _leased.get()
        if held is None:
            return self._own()
        if not held:
            self._slots.acquire()   # waits while `size` requests hold one
            try:
                held.append(self._idle.get_nowait())
            except queue.Empty:
                try:
                    held.append(self._open())
                except BaseException:
                    self._slots.release()
                    raise
        return held[0]

    def _own(self) -> Store:
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = self._open()
        return store

    def _open(self) -> Store:
        store = self._opener(self.location)
        with self._lock:
            self._opened.append(store)
        return store

    def close(self) -> None:
        with self._lock:
            for store in self._opened:
                # SQLite refuses a close from another thread than the opener's; such a
                # connection goes with the process.
                with contextlib.suppress(Exception):
                    store.close()
            self._opened.clear()

    def last_vm_change(self) -> float | None:
        """When ppec last changed a VM anywhere (an index lookup: hosts_vms_changed)."""
        row = self.store().db.execute("SELECT max(vms_changed_at) FROM hosts").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def host_page(self, ask: PageAsk, *, now: float, fresh_for: float, region: str | None = None,
                  rack: str | None = None, state: str | None = None,
                  name: str | None = None) -> tuple[list[HostRow], bool]:
        """One page of hosts by name (and whether more follow), joined with the time of
        their snapshot and their reachability."""
        cols = ", ".join([f"h.{c}" for c in _HOST_COLS] + ["s.taken_at"]
                         + [f"st.{c}" for c in _STATUS_COLS] + ["h.vms_changed_at"])
        where, args = _host_filters(ask, now, fresh_for, region, rack, state, name)
        sql = (f"SELECT {cols} FROM hosts h LEFT JOIN snapshots s ON s.host = h.name "
               f"LEFT JOIN host_status st ON st.host = h.name"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY h.name LIMIT ?")
        rows = self.store().db.execute(sql, (*args, ask.limit + 1)).fetchall()
        n = len(_HOST_COLS)
        out = [HostRow(_host(list(r[:n])), None if r[n] is None else float(r[n]),
                       _status(list(r[n + 1:-1])), None if r[-1] is None else float(r[-1]))
               for r in rows[:ask.limit]]
        return out, len(rows) > ask.limit

    def vm_chunk(self, after: str | None, limit: int, host: str | None,
                 name: str | None = None) -> list[VmLine]:
        """Up to ``limit`` VMs by name after ``after``, with their document, their host's
        snapshot time and reachability."""
        cols = ", ".join([f"v.{c}" for c in _VM_COLS] + ["v.spec", "s.taken_at"]
                         + [f"st.{c}" for c in _STATUS_COLS] + ["h.vms_changed_at"])
        where, args = [], []   # type: list[str], list[Any]
        if after is not None:
            where.append("v.name > ?")
            args.append(after)
        for column, value in (("v.host", host), ("v.name", name)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = (f"SELECT {cols} FROM vms v LEFT JOIN snapshots s ON s.host = v.host "
               f"LEFT JOIN host_status st ON st.host = v.host "
               f"LEFT JOIN hosts h ON h.name = v.host"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY v.name LIMIT ?")
        rows = self.store().db.execute(sql, (*args, limit)).fetchall()
        n = len(_VM_COLS)
        return [VmLine(dict(zip(_VM_COLS, r[:n], strict=True)),
                       None if r[n + 1] is None else float(r[n + 1]),
                       _status(list(r[n + 2:-1])), None if r[n] is None else str(r[n]),
                       None if r[-1] is None else float(r[-1]))
                for r in rows]

    def stamps(self, hosts: list[str]) -> dict[str, float]:
        """host -> taken_at of those hosts' snapshots (hosts without one are left out)."""
        rows = rows_in(self.store().db, "SELECT host, taken_at FROM snapshots "
                                        "WHERE host IN ({})", hosts)
        return {str(h): float(t) for h, t in rows}


def _host_filters(ask: PageAsk, now: float, fresh_for: float, region: str | None,
                  rack: str | None, state: str | None,
                  name: str | None) -> tuple[list[str], list[Any]]:
    where, args = [], []   # type: list[str], list[Any]
    for column, value in (("h.name", name), ("h.region", region), ("h.rack", rack)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if ask.after is not None:
        where.append("h.name > ?")
        args.append(ask.after)
    if state is not None:   # the rule of core/freshness.py, as SQL
        condition, takes_time = freshness.SQL[state]
        where.append(condition)
        if takes_time:
            args.append(now - fresh_for)
    return where, args
