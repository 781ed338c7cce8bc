"""The API's other answers: capacity for a shape, alerts, pending requests, the audit
chain's state and the service's health. Each goes through the same library function the
CLI uses (``capacity_report.report``, ``makerchecker.list_``, ``audit.verify``,
``fleetstate.jobs``), so the web and ``ppec`` never disagree."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ppec.core.errors import BadInput, PpecError
from ppec.operator import audit, capacity_report, makerchecker
from ppec.operator.choose import Ask, shape_from
from ppec.operator.config import Config, known_hosts_path
from ppec.operator.context import Context
from ppec.operator.fleet.client import Reach
from ppec.operator.store import Store, fleetstate
from ppec.service.http.pages import PageAsk
from ppec.wire.vmspec import MAX_VCPUS, POLICIES, Pinning, literal


@dataclass(frozen=True)
class Shape:
    """A capacity question: a flavor, or explicit sizes (explicit parts win)."""

    flavor: str | None = None
    cpus: int | None = None
    memory: str | None = None
    disk: str | None = None
    numa: str = "shared"

    def ask(self, config: Config) -> Ask | None:
        if self.flavor is None and self.cpus is None and self.memory is None:
            return None
        base = config.flavor(self.flavor) if self.flavor else None
        if base is None and (self.cpus is None or self.memory is None):
            raise BadInput("give flavor, or both cpus and memory")
        shape = shape_from(config, self.flavor, self.cpus, self.memory, self.disk,
                           Pinning(policy=literal(self.numa, POLICIES, "numa")))
        if not 1 <= shape.vcpus <= MAX_VCPUS:
            raise BadInput(f"cpus must be between 1 and {MAX_VCPUS}, not {shape.vcpus}")
        return Ask(shape)


def context(store: Store, config: Config) -> Context:
    """A context for library calls that read only (no host is ever asked from here)."""
    return Context(store=store, config=config,
                   reach=Reach(known_hosts=known_hosts_path(),
                               connect_timeout=config.connect_timeout,
                               command=config.ssh_command))


class Memo:
    """Answers kept while the fleet they came from is unchanged (and at most ``ttl``)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._kept: dict[Any, tuple[float, Any, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, version: Any, make: Callable[[], Any]) -> Any:
        now = self._clock()
        with self._lock:
            hit = self._kept.get(key)
        if hit is not None and hit[1] == version and now - hit[0] < self.ttl:
            return hit[2]
        value = make()
        with self._lock:
            if len(self._kept) > 256:
                self._kept.clear()
            self._kept[key] = (now, version, value)
        return value


def fleet_version(store: Store) -> tuple[Any, ...]:
    """Changes whenever a snapshot, a host, a drain flag or a VM on a host does."""
    snaps = store.db.execute("SELECT count(*), max(taken_at), sum(taken_at) FROM snapshots"
                             ).fetchone()
    hosts = store.db.execute("SELECT count(*), sum(drained), max(added_at), "
                             "max(vms_changed_at) FROM hosts").fetchone()
    return (*snaps, *hosts)


def capacity(store: Store, config: Config, shape: Shape, by: str) -> dict[str, Any]:
    """``ppec capacity --by BY [shape]``, as JSON (the CLI's own report)."""
    ctx = context(store, config)
    ask = shape.ask(config)
    if ask is not None:
        ask.check(store.hosts())
    return capacity_report.report(ctx, by=by, ask=ask)


def alert_doc(row: tuple[Any, ...], now: float) -> dict[str, Any]:
    keys = ("id", "host", "source", "code", "object", "detail", "first_seen", "last_seen",
            "resolved_at")
    doc = dict(zip(keys, row, strict=True))
    doc["state"] = "open" if doc["resolved_at"] is None else "resolved"
    doc["age_s"] = round(max(0.0, now - float(doc["last_seen"])), 3)
    return doc


def alert_page(store: Store, ask: PageAsk, now: float, *, state: str = "open",
               host: str | None = None, code: str | None = None
               ) -> tuple[list[dict[str, Any]], bool]:
    """Newest first; the cursor names the last id seen."""
    if state not in ("open", "resolved", "all"):
        raise BadInput(f"state must be open, resolved or all, not {state!r}")
    where, args = [], []   # type: list[str], list[Any]
    if state != "all":
        where.append("resolved_at IS NULL" if state == "open" else "resolved_at IS NOT NULL")
    for column, value in (("host", host), ("code", code)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if ask.after is not None:
        if not ask.after.isdigit():
            raise BadInput("malformed cursor: not an alerts cursor", code="BAD_CURSOR")
        where.append("id < ?")
        args.append(int(ask.after))
    sql = ("SELECT id, host, source, code, object, detail, first_seen, last_seen, resolved_at"
           " FROM fleet_alerts" + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY id DESC LIMIT ?")
    rows = store.db.execute(sql, (*args, ask.limit + 1)).fetchall()
    return [alert_doc(tuple(r), now) for r in rows[:ask.limit]], len(rows) > ask.limit


def open_alert_counts(store: Store) -> dict[str, int]:
    rows = store.db.execute("SELECT code, count(*) FROM fleet_alerts WHERE resolved_at IS NULL"
                            " GROUP BY code ORDER BY code").fetchall()
    return {str(c): int(n) for c, n in rows}


def requests(store: Store, config: Config, state: str | None, now: float
             ) -> list[dict[str, Any]]:
    """Requests (pending ones by default) with the exact command that approves each."""
    out = []
    for r in makerchecker.list_(context(store, config), state):
        doc = {k: v for k, v in r.items() if k != "payload"}
        doc["params"] = r["payload"].get("params", {})
        if r["state"] == "pending":
            doc["approve"] = f"ppec request approve {r['id']}"
            doc["reject"] = f"ppec request reject {r['id']} --reason TEXT"
            doc["expired"] = float(r["expires"]) < now if isinstance(
                r["expires"], int | float) else None
        out.append(doc)
    return out


def audit_state(store: Store) -> dict[str, Any]:
    """The chain as ``ppec audit verify`` sees it: intact with N entries, or broken where."""
    head = store.db.execute("SELECT seq, hash, at FROM audit ORDER BY seq DESC LIMIT 1"
                            ).fetchone()
    doc: dict[str, Any] = {"head": None if head is None else
                           {"seq": int(head[0]), "hash": str(head[1]), "at": str(head[2])}}
    try:
        doc.update(state="intact", entries=audit.verify(store), error=None, seq=None)
    except PpecError as e:
        doc.update(state="broken", entries=None, error=e.message, code=e.code,
                   seq=e.details.get("seq"))
    return doc


def health(store: Store, now: float, leader: Callable[[], bool | None] | None
           ) -> dict[str, Any]:
    jobs = [{"job": j.job, "started": j.started, "duration_s": j.duration, "ok": j.ok,
             "hosts": j.hosts, "failed": j.failed, "error": j.error, "runs": j.runs,
             "failures": j.failures,
             "age_s": round(max(0.0, now - j.started - j.duration), 3)}
            for j in fleetstate.jobs(store)]
    def count(sql: str) -> int:
        return int(store.db.execute(sql).fetchone()[0] or 0)
    total = count("SELECT count(*) FROM hosts")
    failed = count("SELECT count(*) FROM host_status WHERE state = 'failed'")
    # snapshots.host references hosts (ON DELETE CASCADE): every row is an inventory host's
    with_snapshot = count("SELECT count(*) FROM snapshots")
    return {"leader": leader() if leader is not None else None, "jobs": jobs,
            "hosts": {"total": total, "failed": failed,
                      "without_snapshot": max(0, total - with_snapshot)}}


def flavor_table(store: Store, config: Config) -> dict[str, Any]:
    """For each configured flavor: how many more fit in each region and each rack (one
    ``report --by host`` per flavor, summed by the hosts' region and rack)."""
    hosts = {h.name: h for h in store.hosts()}
    rows = []
    for name, f in sorted(config.flavors.items(), key=lambda kv: (kv[1].cpus, kv[0])):
        doc = capacity(store, config, Shape(flavor=name), "host")
        regions: dict[str, int] = {}
        racks: dict[str, int] = {}
        for g in doc["groups"]:
            h = hosts.get(g["group"])
            if h is None:
                continue
            region = h.region or "(none)"
            regions[region] = regions.get(region, 0) + int(g.get("fits", 0))
            rack = f"{region}/{h.rack or '(none)'}"
            racks[rack] = racks.get(rack, 0) + int(g.get("fits", 0))
        rows.append({"flavor": name, "vcpus": f.cpus, "memory_mib": f.memory_mib,
                     "disk_bytes": f.disk_bytes, "fits": int(doc["total"].get("fits", 0)),
                     "by_region": dict(sorted(regions.items())),
                     "by_rack": dict(sorted(racks.items())),
                     "excluded": len(doc["excluded"])})
    return {"flavors": rows}
