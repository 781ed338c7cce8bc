"""Huge pages per NUMA node as the agent reports them, against sysfs read by the test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realparts import Agent, Cli

SYSFS = Path("/sys/devices/system/node/node0/hugepages/hugepages-2048kB")


@pytest.fixture
def eight_pages() -> Iterator[int]:
    """Eight 2 MiB pages reserved on node 0 for the test, the old count restored after."""
    nr = SYSFS / "nr_hugepages"
    if not nr.exists():
        pytest.skip("no 2 MiB huge pages on node 0 of this kernel")
    before = int(nr.read_text())
    nr.write_text(str(before + 8))
    yield int(nr.read_text())
    nr.write_text(str(before))


def test_host_show_numa_reports_sysfs_pages(cli: Cli, test_agent: Agent,
                                            eight_pages: int) -> None:
    cli.ok("host", "add", "t1", "--address", "local", "--socket", str(test_agent.socket))
    doc = json.loads(cli.ok("host", "show", "t1", "--numa", "-o", "json").stdout)
    node0 = next(n for n in doc["nodes"] if n["node"] == 0)
    two = next(h for h in node0["hugepages"] if h["size_kib"] == 2048)
    assert two == {"size_kib": 2048, "total": eight_pages,
                   "free": int((SYSFS / "free_hugepages").read_text())}
    table = cli.ok("host", "show", "t1", "--numa").stdout
    assert f"2M {two['free']}/{eight_pages}" in table, table
