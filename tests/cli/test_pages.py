"""`ppec host list` and `ppec vm list` a page at a time (--limit, --cursor, filters), through
the real executable, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from ppec.operator.store import Host, Store
from ppec.wire.vmspec import Shape
from tests.realparts import Cli

HOSTS = ["bm-1", "bm-2", "bm-3", "bm-4", "bm-5"]


@pytest.fixture
def paged(cli: Cli, store_url: str) -> Iterator[Cli]:
    """Five hosts (two racks) and seven VM records, as host add and vm create leave them."""
    store = Store(store_url)
    for i, name in enumerate(HOSTS):
        # Port 1 on loopback: nothing listens, so asking an agent fails at once.
        store.add_host(Host(name=name, address="127.0.0.1", port=1, rack=f"k{i % 2}",
                            region="eu"))
    for i in range(7):
        store.reserve_vm(f"web-{i}", HOSTS[i % 2], Shape(1, 256, 1 << 30), "")
        store.set_vm(f"web-{i}", state="running" if i % 3 else "shut-off")
    store.close()
    cli.env["PPEC_DB"] = store_url
    yield cli


def _json(cli: Cli, *args: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(cli.ok(*args, "-o", "json").stdout)
    return doc


def _walk(cli: Cli, *args: str) -> tuple[list[str], int]:
    """Follow next_cursor to the end: the names in order, and the number of pages."""
    key = "hosts" if args[0] == "host" else "vms"
    names: list[str] = []
    cursor: list[str] = []
    for pages in range(1, 100):
        doc = _json(cli, *args, *cursor)
        names += [row["name"] for row in doc[key]]
        if doc["next_cursor"] is None:
            return names, pages
        cursor = ["--cursor", doc["next_cursor"]]
    raise AssertionError("never reached the last page")


def test_host_pages_give_each_host_once(paged: Cli) -> None:
    assert _walk(paged, "host", "list", "--limit", "2") == (HOSTS, 3)
    assert _walk(paged, "host", "list", "--limit", "5") == (HOSTS, 1)
    assert _walk(paged, "host", "list", "--limit", "2", "--rack", "k1") == (["bm-2", "bm-4"], 1)
    assert _walk(paged, "host", "list", "--region", "us") == ([], 1)
    # No --limit: the whole list, as before, and the document says it is the last page.
    assert _json(paged, "host", "list")["next_cursor"] is None


def test_the_table_says_how_to_get_the_next_page(paged: Cli) -> None:
    done = paged.ok("host", "list", "--limit", "3", "--rack", "k0")
    assert [ln.split()[0] for ln in done.stdout.splitlines()[1:]] == ["bm-1", "bm-3", "bm-5"]
    assert done.stderr == ""          # all three fit: no next page
    done = paged.ok("host", "list", "--limit", "2", "--rack", "k0")
    [hint] = done.stderr.splitlines()
    assert hint.startswith("ppec: more: ppec host list --rack k0 --limit 2 --cursor ")
    rest = paged.ok(*hint.split()[3:])
    assert [ln.split()[0] for ln in rest.stdout.splitlines()[1:]] == ["bm-5"]
    assert rest.stderr == ""


def test_a_cursor_past_the_end_is_an_empty_page(paged: Cli) -> None:
    cursor = _json(paged, "host", "list", "--limit", "4")["next_cursor"]
    paged.ok("host", "remove", "bm-5")
    assert _json(paged, "host", "list", "--limit", "4", "--cursor", cursor) == {
        "hosts": [], "next_cursor": None}


@pytest.mark.parametrize("args", [("host", "list"), ("vm", "list")])
def test_a_malformed_cursor_is_exit_2(paged: Cli, args: tuple[str, ...]) -> None:
    done = paged.run(*args, "--cursor", "bm-3", "-o", "json")
    assert done.returncode == 2 and done.stdout == ""
    assert json.loads(done.stderr)["error"]["code"] == "BAD_CURSOR"
    done = paged.run(*args, "--limit", "2", "--cursor", "%%%")
    assert done.returncode == 2
    assert done.stderr.startswith("ppec: error: malformed cursor '%%%'")
    assert len(done.stderr.splitlines()) == 1


def test_a_host_cursor_is_not_a_vm_cursor(paged: Cli) -> None:
    cursor = _json(paged, "host", "list", "--limit", "1")["next_cursor"]
    done = paged.run("vm", "list", "--cursor", cursor)
    assert done.returncode == 2 and "pages the hosts list, not the vms list" in done.stderr


def test_vm_pages_come_from_the_store(paged: Cli) -> None:
    # No agent answers for these hosts: the pages are the store's records, and nothing
    # is asked of any host (it would fail, exit 1).
    names, pages = _walk(paged, "vm", "list", "--limit", "3")
    assert (names, pages) == ([f"web-{i}" for i in range(7)], 3)
    doc = _json(paged, "vm", "list", "--limit", "10", "--state", "shut-off")
    assert [v["name"] for v in doc["vms"]] == ["web-0", "web-3", "web-6"]
    assert doc["source"] == "store" and doc["errors"] == [] and doc["next_cursor"] is None
    doc = _json(paged, "vm", "list", "--limit", "2", "--host", "bm-2")
    assert [(v["name"], v["host"]) for v in doc["vms"]] == [("web-1", "bm-2"),
                                                              ("web-3", "bm-2")]
    assert _walk(paged, "vm", "list", "--limit", "2", "--host", "bm-2")[0] == [
        "web-1", "web-3", "web-5"]
    table = paged.ok("vm", "list", "--limit", "1")
    assert table.stdout.splitlines()[1].split()[:3] == ["web-0", "bm-1", "shut-off"]
    assert "ppec: more: ppec vm list --limit 1 --cursor " in table.stderr


def test_vm_list_without_limit_still_asks_the_agents(paged: Cli) -> None:
    done = paged.run("vm", "list", "-o", "json")
    assert done.returncode == 1   # every host unreachable: asked live, all failed
    doc = json.loads(done.stdout)
    assert doc["source"] == "live" and doc["next_cursor"] is None
    assert sorted(e["host"] for e in doc["errors"]) == HOSTS


@pytest.mark.parametrize("args", [("--limit", "0"), ("--limit", "-3"), ("--limit", "x")])
def test_a_bad_limit_is_a_usage_error(paged: Cli, args: tuple[str, ...]) -> None:
    for command in (("host", "list"), ("vm", "list")):
        done = paged.run(*command, *args)
        assert done.returncode == 2 and "--limit" in done.stderr
