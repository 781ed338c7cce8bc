"""What the service (``ppec serve``) keeps about the fleet: each host's reachability and
back-off, the fleet-wide alerts with first/last seen and resolution, and each job's last run.

Writes come in batches: one transaction per round, however many hosts answered, so a round
over 10,000 hosts is a handful of transactions, not 10,000. Times are epoch seconds (REAL).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ppec.operator.store import snaprows
from ppec.operator.store.tables import Store


@dataclass(frozen=True)
class HostStatus:
    host: str
    state: str               # ok | failed
    last_ok: float | None    # when the host last answered (None: never)
    last_attempt: float
    failures: int            # consecutive failures; 0 when ok
    next_attempt: float      # back-off: not asked again before this time
    error_code: str
    error: str


@dataclass(frozen=True)
class Alert:
    id: int
    host: str
    source: str              # drift (the agent's ledger vs libvirt) | agent (its files)
    code: str
    object: str
    detail: str
    first_seen: float
    last_seen: float
    resolved_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Success:
    host: str
    taken_at: float
    snapshot: dict[str, Any]


@dataclass(frozen=True)
class Failure:
    host: str
    code: str
    message: str


@dataclass(frozen=True)
class JobRun:
    job: str
    started: float
    duration: float
    ok: bool
    hosts: int
    failed: int
    error: str
    runs: int
    failures: int


_STATUS_COLS = ("host, state, last_ok, last_attempt, failures, next_attempt, error_code, "
                "error")
_ALERT_COLS = ("id, host, source, code, object, detail, first_seen, last_seen, resolved_at")


def backoff(failures: int, base: float, cap: float) -> float:
    """Seconds to wait after ``failures`` consecutive failures: doubling, capped."""
    return float(min(cap, base * 2.0 ** max(0, failures - 1)))


def record_round(store: Store, ok: Sequence[Success], failed: Sequence[Failure], now: float,
                 *, backoff_base: float = 5.0, backoff_cap: float = 300.0) -> None:
    """One round's outcome in one transaction: snapshots and status of the hosts that
    answered, status and back-off of the ones that did not."""
    # Encoded before the transaction: at 10,000 hosts this is seconds of CPU, and writers
    # (a `vm create` claiming its name) wait while the transaction holds the store.
    rows = [snaprows.row(s.host, s.taken_at, s.snapshot) for s in ok]
    with store.transaction() as db:
        known = {str(r[0]): int(r[1]) for r in db.execute(
            "SELECT host, failures FROM host_status").fetchall()} if failed else {}
        hosts = {str(r[0]) for r in db.execute("SELECT name FROM hosts").fetchall()}
        for s, row in zip(ok, rows, strict=True):
            if s.host not in hosts:
                continue   # removed from the inventory while the round ran
            snaprows.write(db, row)
            db.execute(f"INSERT INTO host_status ({_STATUS_COLS}) VALUES "
                       "(?, 'ok', ?, ?, 0, 0, '', '') ON CONFLICT(host) DO UPDATE SET "
                       "state='ok', last_ok=excluded.last_ok, "
                       "last_attempt=excluded.last_attempt, failures=0, next_attempt=0, "
                       "error_code='', error=''", (s.host, now, now))
        for f in failed:
            if f.host not in hosts:
                continue
            count = known.get(f.host, 0) + 1
            db.execute(f"INSERT INTO host_status ({_STATUS_COLS}) VALUES "
                       "(?, 'failed', NULL, ?, ?, ?, ?, ?) ON CONFLICT(host) DO UPDATE SET "
                       "state='failed', last_attempt=excluded.last_attempt, "
                       "failures=excluded.failures, next_attempt=excluded.next_attempt, "
                       "error_code=excluded.error_code, error=excluded.error",
                       (f.host, now, count, now + backoff(count, backoff_base, backoff_cap),
                        f.code, f.message))


def host_statuses(store: Store) -> dict[str, HostStatus]:
    rows = store.db.execute(f"SELECT {_STATUS_COLS} FROM host_status").fetchall()
    return {str(r[0]): HostStatus(str(r[0]), str(r[1]), r[2], float(r[3]), int(r[4]),
                                  float(r[5]), str(r[6]), str(r[7])) for r in rows}


def _alert(row: Sequence[Any]) -> Alert:
    return Alert(int(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]),
                 str(row[5]), float(row[6]), float(row[7]),
                 None if row[8] is None else float(row[8]))


def sync_alerts(store: Store, host: str, source: str,
                found: Iterable[tuple[str, str, str]], now: float
                ) -> tuple[list[Alert], list[Alert]]:
    """Make ``host``'s open alerts from ``source`` equal ``found`` (code, object, detail):
    new ones open, still-present ones get ``last_seen``, gone ones are resolved.
    Returns (opened, resolved), for the notifiers."""
    want = {(code, obj): detail for code, obj, detail in found}
    opened: list[Alert] = []
    resolved: list[Alert] = []
    with store.transaction() as db:
        rows = db.execute(f"SELECT {_ALERT_COLS} FROM fleet_alerts WHERE host=? AND source=? "
                          "AND resolved_at IS NULL", (host, source)).fetchall()
        current = {(a.code, a.object): a for a in map(_alert, rows)}
        for key, alert in current.items():
            if key in want:
                db.execute("UPDATE fleet_alerts SET last_seen=?, detail=? WHERE id=?",
                           (now, want[key], alert.id))
            else:
                db.execute("UPDATE fleet_alerts SET resolved_at=? WHERE id=?", (now, alert.id))
                resolved.append(Alert(**{**alert.__dict__, "resolved_at": now}))
        new = [(k, d) for k, d in want.items() if k not in current]
        if new:
            next_id = int(db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM fleet_alerts")
                          .fetchone()[0])
            for offset, ((code, obj), detail) in enumerate(new):
                alert = Alert(next_id + offset, host, source, code, obj, detail, now, now, None)
                db.execute(f"INSERT INTO fleet_alerts ({_ALERT_COLS}) VALUES "
                           "(?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                           (alert.id, host, source, code, obj, detail, now, now))
                opened.append(alert)
    return opened, resolved


def alerts(store: Store, *, open_only: bool = True, host: str | None = None,
           limit: int = 1000) -> list[Alert]:
    where, args = [], []   # type: list[str], list[Any]
    if open_only:
        where.append("resolved_at IS NULL")
    if host is not None:
        where.append("host=?")
        args.append(host)
    sql = f"SELECT {_ALERT_COLS} FROM fleet_alerts"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    return [_alert(r) for r in store.db.execute(sql, (*args, limit)).fetchall()]


def record_job(store: Store, job: str, started: float, duration: float, ok: bool, *,
               hosts: int = 0, failed: int = 0, error: str = "") -> None:
    with store.transaction() as db:
        db.execute("INSERT INTO job_runs (job, started, duration, ok, hosts, failed, error, "
                   "runs, failures) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?) "
                   "ON CONFLICT(job) DO UPDATE SET started=excluded.started, "
                   "duration=excluded.duration, ok=excluded.ok, hosts=excluded.hosts, "
                   "failed=excluded.failed, error=excluded.error, "
                   "runs=job_runs.runs + 1, failures=job_runs.failures + excluded.failures",
                   (job, started, duration, int(ok), hosts, failed, error, int(not ok)))


def jobs(store: Store) -> list[JobRun]:
    rows = store.db.execute("SELECT job, started, duration, ok, hosts, failed, error, runs, "
                            "failures FROM job_runs ORDER BY job").fetchall()
    return [JobRun(str(r[0]), float(r[1]), float(r[2]), bool(r[3]), int(r[4]), int(r[5]),
                   str(r[6]), int(r[7]), int(r[8])) for r in rows]
