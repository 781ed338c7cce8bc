"""The operator store: hosts and VMs (SQLite; schema versioned).

The store is a cache of what the fleet holds plus fleet-wide facts. Uniqueness that
matters is a constraint here, not a check in Python: two concurrent ``ppec vm create``
of one name cannot both pass, because the second INSERT fails.
"""

from __future__ import annotations

import json
import time
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
from ppec.operator.store.schema import MIGRATIONS as MIGRATIONS
from ppec.operator.store.transient import DEFAULT_CONNECT_TIMEOUT

if TYPE_CHECKING:   # only named: the store-only commands need not load the VM spec
    from ppec.wire.vmspec import Shape


class HaConflict(PpecError):
    """Another member of the HA group took that spread key first (a race, or a stale view)."""

    code = "HA_CONFLICT"




def _changed_on(db: Connection, vm: str) -> None:
    """Note that ppec changed a VM on its host now: a snapshot of that host taken before
    is no longer true (core/freshness.py). In the VM row's own transaction."""
    db.execute("UPDATE hosts SET vms_changed_at = ? WHERE name = (SELECT host FROM vms "
               "WHERE name = ?)", (time.time(), vm))


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

    def __init__(self, location: str | Path,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        self.location = str(location)
        self.db = connect(self.location, connect_timeout)
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
                _changed_on(db, name)
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
                _changed_on(db, name)
                db.execute("UPDATE vms SET host=?, ha_key=CASE WHEN ha_group IS NULL THEN NULL "
                           "ELSE ? END, updated_at=? WHERE name=?", (host, ha_key, utc_now(), name))
                _changed_on(db, name)
        except self.db.IntegrityError:
            raise HaConflict(f"the HA group already has a member on {ha_key}") from None

    def set_vm(self, name: str, **fields: Any) -> None:
        allowed = {"state", "host", "vcpus", "memory_mib", "disk_bytes", "ha_key", "spec",
                   "moving_to", "evacuated_from"}
        if not set(fields) <= allowed:   # column names go into the SQL: never a caller's
            raise ValueError(f"set_vm: not a VM column: {sorted(set(fields) - allowed)}")
        assignments = ", ".join(f"{k}=?" for k in fields)
        with self._tx() as db:
            _changed_on(db, name)   # the host it leaves, when "host" is among the fields
            db.execute(f"UPDATE vms SET {assignments}, updated_at=? WHERE name=?",
                       (*fields.values(), utc_now(), name))
            if "host" in fields:
                _changed_on(db, name)

    def forget_vm(self, name: str) -> None:
        """Drop a VM's record, noting when it left its host (core/freshness.py)."""
        with self._tx() as db:
            _changed_on(db, name)
            db.execute("DELETE FROM vms WHERE name=?", (name,))

    def vm_or_none(self, name: str) -> VmRow | None:
        row = self.db.execute(f"SELECT {_VM_COLS} FROM vms WHERE name=?", (name,)).fetchone()
        return VmRow(*row) if row else None

    def vm_ha_group(self, name: str) -> tuple[str, str]:
        """(group, spread) of the VM's HA group, or ("", "host")."""
        row = self.db.execute("SELECT g.name, g.spread FROM vms v JOIN ha_groups g ON "
                              "g.name = v.ha_group WHERE v.name=?", (name,)).fetchone()
        return (str(row[0]), str(row[1])) if row else ("", "host")

    def vm_move(self, name: str) -> str:
        """The host a move of ``name`` is under way to, or ""."""
        row = self.db.execute("SELECT moving_to FROM vms WHERE name=?", (name,)).fetchone()
        return str(row[0] or "") if row else ""

    def vm_documents(self) -> dict[str, dict[str, Any]]:
        """Every VM's stored document (VMs built before documents have none)."""
        rows = self.db.execute("SELECT name, spec FROM vms WHERE spec IS NOT NULL").fetchall()
        return {str(n): json.loads(s) for n, s in rows if s}

    def evacuated_from(self, host: str) -> list[str]:
        """The VMs an evacuation of ``host`` moved away (and not back yet)."""
        rows = self.db.execute("SELECT name FROM vms WHERE evacuated_from=? ORDER BY name",
                               (host,)).fetchall()
        return [str(r[0]) for r in rows]

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
