"""Every view of a host, right after a VM change with no service running (issue 27).

`vm create`, `vm stop`, `vm start` and `vm delete` change a host after its stored
snapshot was taken: no view may call that snapshot fresh (core/freshness.py) until a new
one is taken. One test per view, each through the four changes, on the real store of a
real CLI against a real agent (libvirt's test driver), with `ppec sync` between: after a
sync the view is fresh again and counts what the host holds.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.realparts import Agent, Cli
from tests.service.http_support import get, serving

View = Callable[[], tuple[str, Any]]   # -> (the host's state, what it counts)


@pytest.fixture
def host(cli: Cli, test_agent: Agent) -> Cli:
    cli.ok("host", "add", "t1", "--address", "local", "--socket", str(test_agent.socket))
    cli.ok("sync")
    return cli


def changes(cli: Cli) -> Iterator[str]:
    """Each change in turn, each time after a sync made the snapshot fresh."""
    steps = {"create": ("vm", "create", "v1", "--cpus", "2", "--memory", "512M", "--disk",
                        "1G", "--host", "t1"),
             "stop": ("vm", "stop", "v1"), "start": ("vm", "start", "v1"),
             "delete": ("vm", "delete", "v1")}
    for name, argv in steps.items():
        cli.ok("sync")
        cli.ok(*argv)
        yield name


def check(cli: Cli, view: View, count: Callable[[], Any]) -> None:
    state, _ = view()
    assert state == "fresh"
    for change in changes(cli):
        state, counted = view()
        assert state == "changed", (change, state, counted)
        cli.ok("sync")
        state, counted = view()
        assert (state, counted) == ("fresh", count()), change


def vms_on_t1(cli: Cli) -> int:
    return len(json.loads(cli.ok("vm", "list", "--host", "t1", "-o", "json").stdout)["vms"])


def test_host_list(host: Cli) -> None:
    def view() -> tuple[str, Any]:
        [row] = json.loads(host.ok("host", "list", "-o", "json").stdout)["hosts"]
        if row["state"] == "changed":
            assert row["changed_at"] > 0 and row["age_s"] >= 0
        table = host.ok("host", "list").stdout
        assert re.search(rf"\bt1\b.*\b{row['state']}\b", table), table
        return row["state"], row["vms"]
    check(host, view, lambda: vms_on_t1(host))


def test_host_show(host: Cli) -> None:
    def view() -> tuple[str, Any]:
        doc = json.loads(host.ok("host", "show", "t1", "-o", "json").stdout)
        # The live part is asked now: always true. The stored snapshot is judged.
        assert doc["live"]["vm_count"] == vms_on_t1(host)
        return doc["snapshot"]["state"], doc["snapshot"]["vm_count"]
    check(host, view, lambda: vms_on_t1(host))


def test_capacity(host: Cli) -> None:
    def used_mib() -> tuple[str, Any]:
        doc = json.loads(host.ok("capacity", "-o", "json").stdout)
        if doc["excluded"]:
            [gone] = doc["excluded"]
            assert gone["host"] == "t1" and gone["reason"].startswith(
                "snapshot changed (taken before a VM change at "), gone
            return "changed", doc["total"]["memory_mib"]   # t1 not counted at all
        [group] = doc["groups"]
        return "fresh", group["memory_mib"] - group["free_mib"]
    _, before = used_mib()
    check(host, used_mib, lambda: before + 512 * vms_on_t1(host))


def test_api_host_page_and_list(host: Cli) -> None:
    with serving(host.db, warm_every=None) as url:
        def view() -> tuple[str, Any]:
            page = get(f"{url}/api/v1/hosts/t1").json()
            # Many readers share a list page built within the last second, but never one
            # built before a VM change: it may lag a new snapshot (saying "changed" a
            # moment longer), never call the old one fresh.
            [row] = get(f"{url}/api/v1/hosts").json()["hosts"]
            assert row["state"] == page["state"] or (row["state"], page["state"]) == (
                "changed", "fresh"), (row, page)
            time.sleep(1.05)
            [row] = get(f"{url}/api/v1/hosts").json()["hosts"]
            assert row["state"] == page["state"]
            # The store selects by the same rule: the host is under its own state only.
            for s in ("fresh", "changed", "stale"):
                names = [h["name"] for h in get(f"{url}/api/v1/hosts?state={s}").json()["hosts"]]
                assert names == (["t1"] if s == page["state"] else []), (s, page["state"])
            return page["state"], page["vm_count"]
        check(host, view, lambda: vms_on_t1(host))


def test_metrics(host: Cli) -> None:
    with serving(host.db, warm_every=None) as url:
        def view() -> tuple[str, Any]:
            text = get(f"{url}/metrics").body.decode()
            [state] = re.findall(r'ppec_host_info\{host="t1",[^}]*state="(\w+)"', text)
            assert f'ppec_hosts{{state="{state}"}} 1' in text
            running = re.findall(r'ppec_vms\{state="running"\} (\d+)', text)
            return state, int(running[0]) if running else 0
        check(host, view, lambda: sum(
            1 for v in json.loads(host.ok("vm", "list", "-o", "json").stdout)["vms"]
            if v["state"] == "running"))


def test_api_vm_page(host: Cli) -> None:
    """A VM's state on the API after ppec changed it: the store's word until the host's
    next snapshot, which then says the same."""
    with serving(host.db, warm_every=None) as url:
        for change in changes(host):
            if change == "delete":
                assert get(f"{url}/api/v1/vms/v1").status == 404
                break
            stored = {v["name"]: v["state"] for v in json.loads(
                host.ok("vm", "list", "-o", "json").stdout)["vms"]}
            doc = get(f"{url}/api/v1/vms/v1").json()
            assert (doc["state"], doc["state_from"]) == (stored["v1"], "store"), change
            host.ok("sync")
            doc = get(f"{url}/api/v1/vms/v1").json()
            assert (doc["state"], doc["state_from"]) == (stored["v1"], "snapshot"), change
