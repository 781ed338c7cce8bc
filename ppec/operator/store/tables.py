"""The operator store: hosts and VMs (SQLite; schema versioned).

The store is a cache of what the fleet holds plus fleet-wide facts. Uniqueness that
matters is a constraint here, not a check in Python: two concurrent ``ppec vm create``
of one name cannot both pass, because the second INSERT fails.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppec.core import sqlschema
from ppec.core.clock import utc_now
from ppec.core.errors import AlreadyExists, BadInput, NotFound, PpecError
from ppec.operator.store import snaprows
from ppec.operator.store.backends import Connection, connect
from ppec.operator.store.records import Host, VmRow

if TYPE_CHECKING:   # only named: the store-only commands need not load the VM spec
    from ppec.wire.vmspec import Shape


class HaConflict(PpecError):
    """Another member of the HA group took that spread key first (a race, or a stale view)."""

    code = "HA_CONFLICT"


MIGRATIONS: list[str] = [
    # 1: hosts and VMs
    """
    CREATE TABLE hosts (
        name          TEXT PRIMARY KEY,
        address       TEXT NOT NULL,
        port          INTEGER NOT NULL DEFAULT 22,
        username      TEXT NOT NULL DEFAULT 'root',
        identity      TEXT NOT NULL DEFAULT '',
        socket        TEXT NOT NULL DEFAULT '/run/ppec/agent.sock',
        region        TEXT NOT NULL DEFAULT '',
        rack          TEXT NOT NULL DEFAULT '',
        power_domain  TEXT NOT NULL DEFAULT '',
        vrf           TEXT NOT NULL DEFAULT '',
        cost          REAL NOT NULL DEFAULT 0,
        tags          TEXT NOT NULL DEFAULT '[]',
        drained       INTEGER NOT NULL DEFAULT 0,
        added_at      TEXT NOT NULL
    );
    CREATE TABLE vms (
        name        TEXT PRIMARY KEY,
        host        TEXT NOT NULL REFERENCES hosts(name),
        state       TEXT NOT NULL,
        vcpus       INTEGER NOT NULL,
        memory_mib  INTEGER NOT NULL,
        disk_bytes  INTEGER NOT NULL,
        image       TEXT NOT NULL DEFAULT '',
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    CREATE INDEX vms_host ON vms(host);
    """,
    # 2: placement: power model, HA groups (one member per spread key, by constraint),
    #    the latest snapshot of each host
    """
    ALTER TABLE hosts ADD COLUMN power_idle_w REAL NOT NULL DEFAULT 0;
    ALTER TABLE hosts ADD COLUMN power_max_w REAL NOT NULL DEFAULT 0;
    CREATE TABLE ha_groups (
        name    TEXT PRIMARY KEY,
        spread  TEXT NOT NULL CHECK (spread IN ('host', 'rack', 'power_domain'))
    );
    ALTER TABLE vms ADD COLUMN ha_group TEXT REFERENCES ha_groups(name);
    ALTER TABLE vms ADD COLUMN ha_key TEXT;
    CREATE UNIQUE INDEX vms_ha_spread ON vms(ha_group, ha_key) WHERE ha_group IS NOT NULL;
    CREATE TABLE snapshots (
        host      TEXT PRIMARY KEY REFERENCES hosts(name) ON DELETE CASCADE,
        taken_at  REAL NOT NULL,
        data      TEXT NOT NULL
    )
    """,
    # 3: IP pools per VRF; an address is unique in its VRF by primary key
    """
    CREATE TABLE ip_pools (
        name        TEXT PRIMARY KEY,
        vrf         TEXT NOT NULL,
        cidr        TEXT NOT NULL,
        gateway     TEXT NOT NULL DEFAULT '',
        dns         TEXT NOT NULL DEFAULT '[]',
        reserved    TEXT NOT NULL DEFAULT '[]',
        created_at  TEXT NOT NULL
    );
    CREATE TABLE ip_addresses (
        vrf           TEXT NOT NULL,
        address       TEXT NOT NULL,
        pool          TEXT NOT NULL REFERENCES ip_pools(name),
        owner         TEXT NOT NULL DEFAULT '',
        allocated_at  TEXT NOT NULL,
        PRIMARY KEY (vrf, address)
    )
    """,
    # 4: maker-checker requests and the hash-chained audit log
    """
    CREATE TABLE requests (
        id           INTEGER PRIMARY KEY,
        payload      TEXT NOT NULL,
        digest       TEXT NOT NULL UNIQUE,
        maker        TEXT NOT NULL,
        maker_sig    TEXT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'rejected',
                                                    'cancelled', 'executed', 'failed')),
        checker      TEXT NOT NULL DEFAULT '',
        checker_sig  TEXT NOT NULL DEFAULT '',
        note         TEXT NOT NULL DEFAULT '',
        updated_at   TEXT NOT NULL
    );
    CREATE TABLE audit (
        seq         INTEGER PRIMARY KEY,
        at          TEXT NOT NULL,
        actor       TEXT NOT NULL,
        action      TEXT NOT NULL,
        request_id  INTEGER,
        detail      TEXT NOT NULL,
        prev        TEXT NOT NULL,
        hash        TEXT NOT NULL
    )
    """,
    # 5: the service's view (ppec.operator.store.fleetstate): host reachability and
    #    back-off, fleet-wide alerts with first/last seen and resolution, job runs
    """
CREATE TABLE host_status (
    host          TEXT PRIMARY KEY REFERENCES hosts(name) ON DELETE CASCADE,
    state         TEXT NOT NULL CHECK (state IN ('ok', 'failed')),
    last_ok       REAL,
    last_attempt  REAL NOT NULL,
    failures      INTEGER NOT NULL DEFAULT 0,
    next_attempt  REAL NOT NULL DEFAULT 0,
    error_code    TEXT NOT NULL DEFAULT '',
    error         TEXT NOT NULL DEFAULT ''
);
CREATE TABLE fleet_alerts (
    id           INTEGER PRIMARY KEY,
    host         TEXT NOT NULL,
    source       TEXT NOT NULL,
    code         TEXT NOT NULL,
    object       TEXT NOT NULL,
    detail       TEXT NOT NULL DEFAULT '',
    first_seen   REAL NOT NULL,
    last_seen    REAL NOT NULL,
    resolved_at  REAL
);
CREATE UNIQUE INDEX fleet_alerts_open ON fleet_alerts(host, source, code, object)
    WHERE resolved_at IS NULL;
CREATE INDEX fleet_alerts_host ON fleet_alerts(host);
CREATE TABLE job_runs (
    job       TEXT PRIMARY KEY,
    started   REAL NOT NULL,
    duration  REAL NOT NULL,
    ok        INTEGER NOT NULL,
    hosts     INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0,
    error     TEXT NOT NULL DEFAULT '',
    runs      INTEGER NOT NULL DEFAULT 0,
    failures  INTEGER NOT NULL DEFAULT 0
)
    """,
    # 6: byte counts as 8-byte integers on PostgreSQL (a disk of 2 GiB or more)
    """
    ALTER TABLE vms ALTER COLUMN disk_bytes TYPE BIGINT
    """,
    # 7: when a VM last left each host (deleted, or a claim given up): the vms table no
    #    longer shows it, and placement must not trust a snapshot that still counts it
    """
    CREATE TABLE vm_departures (
        host  TEXT PRIMARY KEY REFERENCES hosts(name) ON DELETE CASCADE,
        at    TEXT NOT NULL
    )
    """,
    # 8: beside each snapshot, the part placement reads (store/snaprows.py)
    """
    ALTER TABLE snapshots ADD COLUMN placement TEXT
    """,
    # 9: the whole VM as one document (VmSpec.document, JSON; NULL for VMs built before
    #    it), and each VM's NICs: a MAC is unique fleet-wide by primary key, allocated in
    #    the address's transaction and released with it (operator/ipdb.py)
    """
    ALTER TABLE vms ADD COLUMN spec TEXT;
    CREATE TABLE vm_nics (
        mac           TEXT PRIMARY KEY,
        vm            TEXT NOT NULL,
        slot          INTEGER NOT NULL,
        vrf           TEXT NOT NULL,
        address       TEXT NOT NULL DEFAULT '',
        allocated_at  TEXT NOT NULL,
        UNIQUE (vm, slot)
    )
    """,
]


_HOST_COLS = ("name, address, port, username, identity, socket, region, rack, power_domain,"
              " vrf, cost, tags, drained, added_at, power_idle_w, power_max_w")
_VM_COLS = "name, host, state, vcpus, memory_mib, disk_bytes, image, created_at, updated_at"


def _host(row: tuple[Any, ...]) -> Host:
    values = list(row)
    values[11] = tuple(json.loads(values[11]))
    values[12] = bool(values[12])
    return Host(*values)


class Store:
    """The operator store at ``location``: a SQLite file path or a postgresql:// URL."""

    def __init__(self, location: str | Path) -> None:
        self.location = str(location)
        self.db = connect(self.location)
        self._migrate()

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.db.transaction() as db:
            yield db

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """For modules that keep their own tables here (ipdb, audit): writers
        are serialized, so concurrent ppec processes queue rather than interleave."""
        with self.db.transaction() as db:
            yield db

    def _migrate(self) -> None:
        with self._tx() as db:
            sqlschema.migrate(db, MIGRATIONS, what=f"store {self.location}", ddl=db.ddl)

    @property
    def schema_version(self) -> int:
        return self.db.schema_version()

    # -- hosts ------------------------------------------------------------------------------

    def add_host(self, host: Host) -> None:
        try:
            with self._tx() as db:
                db.execute(f"INSERT INTO hosts ({_HOST_COLS}) VALUES ({','.join('?' * 16)})",
                           (host.name, host.address, host.port, host.username, host.identity,
                            host.socket, host.region, host.rack, host.power_domain, host.vrf,
                            host.cost, json.dumps(list(host.tags)), int(host.drained),
                            host.added_at, host.power_idle_w, host.power_max_w))
        except self.db.IntegrityError:
            raise AlreadyExists(f"host {host.name} is already in the inventory") from None

    def host(self, name: str) -> Host:
        row = self.db.execute(f"SELECT {_HOST_COLS} FROM hosts WHERE name=?",
                               (name,)).fetchone()
        if row is None:
            raise NotFound(f"unknown host {name!r} (see `ppec host list`)")
        return _host(row)

    def hosts(self) -> list[Host]:
        rows = self.db.execute(f"SELECT {_HOST_COLS} FROM hosts ORDER BY name").fetchall()
        return [_host(r) for r in rows]

    def remove_host(self, name: str) -> None:
        with self._tx() as db:
            self.host(name)
            count = db.execute("SELECT count(*) FROM vms WHERE host=?", (name,)).fetchone()[0]
            if count:
                raise BadInput(f"host {name} still has {count} VM(s) in the store; delete or "
                               f"move them first", code="HOST_IN_USE")
            db.execute("DELETE FROM hosts WHERE name=?", (name,))

    def set_drained(self, name: str, drained: bool) -> Host:
        with self._tx() as db:
            self.host(name)
            db.execute("UPDATE hosts SET drained=? WHERE name=?", (int(drained), name))
        return self.host(name)

    # -- VMs --------------------------------------------------------------------------------

    def reserve_vm(self, name: str, host: str, shape: Shape, image: str, ha_group: str = "",
                   ha_key: str = "") -> None:
        """Claim the name fleet-wide before any host is asked to build it.

        With an HA group, also claim the spread key (host, rack or power domain): a second
        member on the same key fails on the ``vms_ha_spread`` constraint, however many
        ``ppec`` processes race.
        """
        now = utc_now()
        try:
            with self._tx() as db:
                db.execute(f"INSERT INTO vms ({_VM_COLS}, ha_group, ha_key) "
                           f"VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                           (name, host, "creating", shape.vcpus, shape.memory_mib,
                            shape.disk_bytes, image, now, now, ha_group or None,
                            ha_key if ha_group else None))
        except self.db.IntegrityError as e:
            if "foreign key" in str(e).lower():
                raise NotFound(f"unknown host {host!r}" + (f" or HA group {ha_group!r}"
                                                          if ha_group else "")) from None
            if "ha_group" in str(e) or "vms_ha_spread" in str(e):
                raise HaConflict(f"HA group {ha_group} already has a member on {ha_key}",
                                 details={"ha_group": ha_group, "key": ha_key}) from None
            existing = self.vm_or_none(name)
            where = f" on host {existing.host} ({existing.state})" if existing else ""
            raise AlreadyExists(f"a VM named {name} already exists{where}") from None

    # -- HA groups and snapshots -----------------------------------------------------------

    def ha_group(self, name: str, spread: str) -> str:
        """The group's spread level, recording it on first use; a different level for an
        existing group is refused (members placed under one rule cannot follow another)."""
        with self._tx() as db:
            row = db.execute("SELECT spread FROM ha_groups WHERE name=?", (name,)).fetchone()
            if row is None:
                db.execute("INSERT INTO ha_groups (name, spread) VALUES (?, ?)", (name, spread))
                return spread
        if row[0] != spread:
            raise BadInput(f"HA group {name} spreads by {row[0]}; --spread {spread} "
                           f"contradicts it", code="HA_SPREAD")
        return str(row[0])

    def ha_groups(self) -> list[tuple[str, str]]:
        rows = self.db.execute("SELECT name, spread FROM ha_groups ORDER BY name").fetchall()
        return [(str(a), str(b)) for a, b in rows]

    def ha_members(self, group: str) -> list[tuple[str, str, str]]:
        """(vm, host, spread key) of each member, creating ones included."""
        rows = self.db.execute("SELECT name, host, ha_key FROM vms WHERE ha_group=? "
                                "ORDER BY name", (group,)).fetchall()
        return [(str(a), str(b), str(c)) for a, b, c in rows]

    def save_snapshot(self, host: str, taken_at: float, data: dict[str, Any]) -> None:
        snapshot_row = snaprows.row(host, taken_at, data)
        with self._tx() as db:
            snaprows.write(db, snapshot_row)

    def snapshots(self) -> dict[str, tuple[float, dict[str, Any]]]:
        rows = self.db.execute("SELECT host, taken_at, data FROM snapshots").fetchall()
        return {h: (float(t), json.loads(d)) for h, t, d in rows}

    def move_vm(self, name: str, host: str, ha_key: str) -> None:
        """Point a claim at another host (and spread key) before building there."""
        try:
            with self._tx() as db:
                db.execute("UPDATE vms SET host=?, ha_key=CASE WHEN ha_group IS NULL THEN NULL "
                           "ELSE ? END, updated_at=? WHERE name=?", (host, ha_key, utc_now(), name))
        except self.db.IntegrityError:
            raise HaConflict(f"the HA group already has a member on {ha_key}") from None

    def set_vm(self, name: str, **fields: Any) -> None:
        allowed = {"state", "host", "vcpus", "memory_mib", "disk_bytes", "ha_key", "spec"}
        if not set(fields) <= allowed:   # column names go into the SQL: never a caller's
            raise ValueError(f"set_vm: not a VM column: {sorted(set(fields) - allowed)}")
        assignments = ", ".join(f"{k}=?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE vms SET {assignments}, updated_at=? WHERE name=?",
                       (*fields.values(), utc_now(), name))

    def forget_vm(self, name: str) -> None:
        """Drop a VM's record, noting when it left its host (pages.vm_changes)."""
        with self._tx() as db:
            row = db.execute("DELETE FROM vms WHERE name=? RETURNING host", (name,)).fetchone()
            if row is None:
                return
            db.execute("INSERT INTO vm_departures (host, at) VALUES (?, ?) "
                       "ON CONFLICT(host) DO UPDATE SET at=excluded.at", (row[0], utc_now()))

    def vm_spec(self, name: str) -> dict[str, Any] | None:
        """The VM's stored document (VmSpec.document), or None (unknown VM, or built
        before documents were stored)."""
        row = self.db.execute("SELECT spec FROM vms WHERE name=?", (name,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def vm_or_none(self, name: str) -> VmRow | None:
        row = self.db.execute(f"SELECT {_VM_COLS} FROM vms WHERE name=?", (name,)).fetchone()
        return VmRow(*row) if row else None

    def vm(self, name: str) -> VmRow:
        row = self.vm_or_none(name)
        if row is None:
            raise NotFound(f"unknown VM {name!r} (see `ppec vm list`)")
        return row

    def vms(self, host: str | None = None) -> list[VmRow]:
        sql, args = f"SELECT {_VM_COLS} FROM vms", ()  # type: tuple[str, tuple[str, ...]]
        if host is not None:
            sql, args = sql + " WHERE host=?", (host,)
        return [VmRow(*r) for r in self.db.execute(sql + " ORDER BY name", args).fetchall()]
