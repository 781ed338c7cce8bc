"""Paged lists (ppec.operator.listing over store/pages.py), on SQLite and PostgreSQL: every
item exactly once across the pages, filters, past-the-end and malformed cursors, and a page
read with LIMIT in SQL rather than the whole table."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ppec.core.errors import BadInput, NotFound
from ppec.operator import config as ppec_config
from ppec.operator import listing
from ppec.operator.context import Context
from ppec.operator.fleet.client import Reach
from ppec.operator.store import Host, Store
from ppec.wire.vmspec import Shape

SHAPE = Shape(vcpus=1, memory_mib=256, disk_bytes=1 << 30)
# Names whose byte order and a collation's order may differ: paging must follow the
# store's own ORDER BY, whatever it is.
NAMES = [f"bm-{i:03d}" for i in range(37)] + ["a", "a-1", "a1", "b", "z-9", "zz"]


class CountingStore(Store):
    """The real store; remembers how many rows each SELECT returned."""

    fetched: list[tuple[str, int]]

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.fetched = []
        execute = self.db.execute

        def counted(sql: str, params: Any = ()) -> Any:
            cursor = execute(sql, params)
            if not sql.lstrip().upper().startswith("SELECT"):
                return cursor
            rows = cursor.fetchall()
            self.fetched.append((sql, len(rows)))
            return _Rows(rows)
        self.db.execute = counted   # type: ignore[method-assign]


class _Rows:
    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def fetchall(self) -> list[Any]:
        return self.rows

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None


@pytest.fixture
def ctx(store_url: str, tmp_path: Path) -> Iterator[Context]:
    store = CountingStore(store_url)
    for i, name in enumerate(NAMES):
        store.add_host(Host(name=name, address=f"{name}.example", region=f"r{i % 3}",
                            rack=f"k{i % 2}"))
    for i, name in enumerate(NAMES[:20]):
        store.reserve_vm(f"vm-{i:02d}", name, SHAPE, "")
        store.set_vm(f"vm-{i:02d}", state="running" if i % 4 else "shut-off")
    store.save_snapshot("a", 1.0, {"taken_at": 1.0, "vm_count": 7})
    (tmp_path / "config.toml").write_text("")
    c = Context(store=store, config=ppec_config.load(tmp_path / "config.toml"),
                reach=Reach(known_hosts=tmp_path / "known_hosts"))
    yield c
    c.close()


def _walk(fetch: Any, key: str, limit: int, **filters: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        doc = fetch(limit=limit, cursor=cursor, **filters)
        assert len(doc[key]) <= limit
        seen += doc[key]
        cursor = doc["next_cursor"]
        if cursor is None:
            return seen
        assert doc[key], "a page with a next cursor is never empty"
    raise AssertionError("never reached the last page")


@pytest.mark.parametrize("limit", [1, 7, 43, 100])
def test_walking_the_host_pages_gives_each_host_once(ctx: Context, limit: int) -> None:
    everything = listing.hosts(ctx)["hosts"]
    assert len(everything) == len(NAMES)
    walked = _walk(lambda **kw: listing.hosts(ctx, **kw), "hosts", limit)
    assert [h["name"] for h in walked] == [h["name"] for h in everything]
    assert {h["name"] for h in walked} == set(NAMES)


def test_host_filters_page_too(ctx: Context) -> None:
    want = sorted(n for i, n in enumerate(NAMES) if i % 3 == 1 and i % 2 == 0)
    walked = _walk(lambda **kw: listing.hosts(ctx, **kw), "hosts", 2, region="r1", rack="k0")
    assert sorted(h["name"] for h in walked) == want
    assert all((h["region"], h["rack"]) == ("r1", "k0") for h in walked)


def test_a_page_reads_one_page_of_rows_not_the_fleet(ctx: Context) -> None:
    store = ctx.store
    assert isinstance(store, CountingStore)
    store.fetched.clear()
    doc = listing.hosts(ctx, limit=5)
    assert len(doc["hosts"]) == 5
    assert max(n for _, n in store.fetched) <= 6   # the page and the one row that says "more"
    host_reads = [sql for sql, _ in store.fetched if "FROM hosts" in sql]
    # A page by LIMIT, then only its hosts by name (their last VM change).
    assert host_reads and all("LIMIT" in sql or "name IN (?,?,?,?,?)" in sql
                              for sql in host_reads)


def test_the_stored_snapshot_summary_is_on_its_host(ctx: Context) -> None:
    [a] = [h for h in listing.hosts(ctx, limit=1)["hosts"]]
    assert (a["name"], a["vms"], a["state"]) == ("a", 7, "stale")


def test_walking_the_vm_pages_gives_each_record_once(ctx: Context) -> None:
    walked = _walk(lambda **kw: listing.vms(ctx, **kw), "vms", 3)
    assert sorted(v["name"] for v in walked) == [f"vm-{i:02d}" for i in range(20)]
    assert len(walked) == 20
    off = _walk(lambda **kw: listing.vms(ctx, **kw), "vms", 2, state="shut-off")
    assert sorted(v["name"] for v in off) == [f"vm-{i:02d}" for i in range(0, 20, 4)]
    on_a = listing.vms(ctx, limit=5, host=NAMES[0])
    assert [(v["name"], v["host"]) for v in on_a["vms"]] == [("vm-00", NAMES[0])]
    assert on_a["next_cursor"] is None
    with pytest.raises(NotFound):
        listing.vms(ctx, limit=5, host="nope")


def test_a_cursor_past_the_end_is_an_empty_last_page(ctx: Context) -> None:
    first = listing.hosts(ctx, limit=len(NAMES) - 1)
    cursor = first["next_cursor"]
    remaining = listing.hosts(ctx, limit=5, cursor=cursor)["hosts"]
    ctx.store.remove_host(remaining[0]["name"])      # the one host after the cursor
    doc = listing.hosts(ctx, limit=5, cursor=cursor)
    assert doc == {"hosts": [], "next_cursor": None}
    assert len(remaining) == 1


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("cursor", ["not a cursor!", "", "e30", _b64(b"[1]"),
                                    _b64(b'{"of": "hosts"}'), _b64(b'{"of":"x","after":"a"}'),
                                    _b64(b'{"of":"hosts","after":""}'), _b64(b"\xff\xfe")])
def test_a_malformed_cursor_is_bad_cursor(ctx: Context, cursor: str) -> None:
    with pytest.raises(BadInput) as caught:
        listing.hosts(ctx, limit=2, cursor=cursor)
    assert (caught.value.code, caught.value.exit_code) == ("BAD_CURSOR", 2)


def test_a_cursor_of_one_list_is_refused_by_the_other(ctx: Context) -> None:
    cursor = listing.vms(ctx, limit=2)["next_cursor"]
    with pytest.raises(BadInput, match="pages the vms list, not the hosts list"):
        listing.hosts(ctx, limit=2, cursor=cursor)
