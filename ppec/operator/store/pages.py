"""Pages of the inventory and of the VM records, keyset-paged in SQL; and when ppec last
changed a VM on each host (what makes a stored snapshot out of date before it ages).

A page is ``WHERE name > :after ORDER BY name LIMIT :n + 1``: the store reads one page (and
one row to know whether another follows), never the whole fleet, and a page reached from a
cursor is the same whatever was added or removed before it. The one extra row means the
last page says so (no next key) instead of leaving an empty page to fetch.
"""

from __future__ import annotations

from typing import Any

from ppec.operator.store import snaprows
from ppec.operator.store.records import Host, VmRow
from ppec.operator.store.tables import _HOST_COLS, _VM_COLS, Store, _host


def _page(store: Store, table: str, cols: str, filters: dict[str, str], after: str,
          limit: int | None) -> tuple[list[Any], str | None]:
    where, args = ["name > ?"], [after]   # type: list[str], list[Any]
    for column, value in filters.items():
        if value:
            where.append(f"{column} = ?")
            args.append(value)
    sql = f"SELECT {cols} FROM {table} WHERE {' AND '.join(where)} ORDER BY name"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit + 1)
    rows = store.db.execute(sql, args).fetchall()
    if limit is None or len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, str(rows[-1][0])


def hosts_page(store: Store, *, limit: int | None = None, after: str = "", region: str = "",
               rack: str = "") -> tuple[list[Host], str | None]:
    """Hosts named after ``after``, by name, at most ``limit`` (None: all); and the last
    name when more follow (else None)."""
    rows, last = _page(store, "hosts", _HOST_COLS, {"region": region, "rack": rack}, after,
                       limit)
    return [_host(r) for r in rows], last


def vms_page(store: Store, *, limit: int | None = None, after: str = "", host: str = "",
             state: str = "") -> tuple[list[VmRow], str | None]:
    """The store's VM records named after ``after``, by name: as ``hosts_page``."""
    rows, last = _page(store, "vms", _VM_COLS, {"host": host, "state": state}, after, limit)
    return [VmRow(*r) for r in rows], last


def vm_changes(store: Store, hosts: list[str] | None = None) -> dict[str, float]:
    """host -> when ppec last changed a VM there (a claim, a build, a start or stop, a
    move, a VM deleted or a claim given up), epoch seconds: ``hosts.vms_changed_at``,
    written with the VM row (core/freshness.py). Only ``hosts`` when given."""
    sql = "SELECT name, vms_changed_at FROM hosts WHERE vms_changed_at IS NOT NULL"
    rows = store.db.execute(sql).fetchall() if hosts is None else \
        snaprows.rows_in(store.db, sql + " AND name IN ({})", hosts)
    return {str(h): float(t) for h, t in rows}
