"""The periodic jobs. Each is a small object with a name, an interval and ``round``:
ask the due hosts through the shared pool, write what came back to the store."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ppec.operator.store import Host, Store
from ppec.operator.store import fleetstate as fs
from ppec.service.log import Log
from ppec.service.notify import Dispatch
from ppec.service.pool import HostPool
from ppec.service.settings import Settings


@dataclass
class Env:
    """What a round works with. ``store`` is the job thread's own connection (SQLite
    connections stay in the thread that opened them)."""

    store: Store
    pool: HostPool
    settings: Settings
    log: Log
    notify: Dispatch
    stop: threading.Event


@dataclass
class Outcome:
    asked: int = 0
    answered: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: int = 0        # still backing off: not asked this round

    @property
    def abandoned(self) -> int:
        """Asked but without an answer yet when the service stopped."""
        return self.asked - self.answered - len(self.failed)


class Job(Protocol):
    name: str

    def interval(self, settings: Settings) -> float: ...
    def round(self, env: Env, hosts: list[Host], now: float) -> Outcome: ...


def due(statuses: dict[str, fs.HostStatus], hosts: Iterable[Host], now: float,
        ignore_backoff: bool = False) -> tuple[list[Host], int]:
    """Hosts to ask now: all but those whose back-off has not expired. Returns (due,
    number skipped)."""
    out, skipped = [], 0
    for h in hosts:
        st = statuses.get(h.name)
        if not ignore_backoff and st is not None and st.state == "failed" \
                and st.next_attempt > now:
            skipped += 1
        else:
            out.append(h)
    return out, skipped


def alerting_hosts(store: Store, source: str) -> set[str]:
    """Hosts with open alerts from ``source``: only these and hosts reporting alerts now
    need a transaction, so a quiet fleet of 10,000 costs no writes."""
    rows = store.db.execute("SELECT DISTINCT host FROM fleet_alerts WHERE source=? AND "
                            "resolved_at IS NULL", (source,)).fetchall()
    return {str(r[0]) for r in rows}


def sync_and_notify(env: Env, host: str, source: str,
                    found: list[tuple[str, str, str]], now: float) -> None:
    opened, resolved = fs.sync_alerts(env.store, host, source, found, now)
    for a in opened:
        env.log.warning("alert_opened", host=host, source=source, code=a.code,
                        object=a.object, detail=a.detail)
    for a in resolved:
        env.log.info("alert_resolved", host=host, source=source, code=a.code,
                     object=a.object)
    env.notify.send(opened, resolved)


def alert_round(env: Env, hosts: list[Host], now: float, *, method: str, source: str,
                findings: Callable[[dict[str, Any]], list[tuple[str, str, str]]]
                ) -> Outcome:
    """An alert job's round: ``method`` on every due host over the checks connection,
    ``findings`` of each answer into the store's alerts from ``source``, and the changes
    to the notifiers. Only hosts with findings now or alerts open cost a transaction."""
    out = Outcome(asked=len(hosts))
    open_on = alerting_hosts(env.store, source)
    for r in env.pool.ask(hosts, method, env.stop, lane="checks"):
        if not r.ok:
            out.failed.append(r.host)
            continue
        out.answered += 1
        found = findings(dict(r.value))
        if found or r.host in open_on:
            sync_and_notify(env, r.host, source, found, now)
    return out
