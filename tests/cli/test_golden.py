"""The main commands' output, exactly: golden text under tests/cli/golden/ (NO_COLOR, 200
columns: tests.realparts.Cli). What changes run to run (a UUID, a time, a scratch path) is
masked to a fixed placeholder first; everything else, spacing included, must match.

After a deliberate change: PPEC_UPDATE_GOLDEN=1 pytest tests/cli/test_golden.py, and
review the diff.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from ppec.numa import Allocation
from ppec.placement import HostSnapshot
from tests.placement.fleets import store_fleet, topology
from tests.policy import as_, install_policy, make_people
from tests.realparts import Agent, Cli

GOLDEN = Path(__file__).parent / "golden"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")


def masked(text: str, *rules: tuple[re.Pattern[str] | str, str]) -> str:
    """Each line without its trailing padding, then each rule's matches replaced."""
    text = "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
    for pattern, placeholder in rules:
        text = re.sub(pattern, placeholder, text)
    return text


def same_width(placeholder: str) -> Callable[[re.Match[str]], str]:
    """A cell's value and its padding as ``placeholder`` padded to the same width, so the
    columns after it stay where they were whatever the value's length."""
    return lambda m: placeholder.ljust(len(m.group()))


def golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("PPEC_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with PPEC_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name}: output differs from {path}"


def host(name: str, **kw: object) -> HostSnapshot:
    base = HostSnapshot(name=name, topology=topology(2, 8, 1, 16), region="eu", rack="r1",
                        vrf="blue", networks=frozenset({"blue", "red"}),
                        taken_at=time.time(), storage_free_bytes=500 << 30,
                        power_idle_w=150, power_max_w=450)
    return replace(base, **kw)  # type: ignore[arg-type]


def dedicated(vm: str, cpus: range, mib: int) -> Allocation:
    return Allocation(vm, "dedicated", len(cpus), frozenset(cpus), ((cpus[0] // 8, mib),))


FLEET = [
    lambda: host("bm-01", allocations=(dedicated("db-1", range(0, 4), 8192),)),
    lambda: host("bm-02", rack="r2", allocations=(
        Allocation("web-1", "shared", 2, frozenset(), ((-1, 2048),)),)),
    lambda: host("bm-03", region="us", rack="r9", vrf="red", drained=True),
    lambda: host("bm-04", region="us", rack="r9", vrf="red", reachable=False),
]


@pytest.fixture
def stored(cli: Cli) -> Cli:
    """Four hosts in the store as `host add` and `sync` leave them (no agent needed)."""
    store_fleet(cli.db, [make() for make in FLEET], cpu_percent=12.5, vm_count=1,
                os_memory_available_mib=20480, cpus=16, dedicated_cpus=4)
    return cli


def test_host_list(stored: Cli) -> None:
    out = stored.ok("host", "list").stdout
    # The snapshots' age: a second or so, whatever this machine's speed.
    text = re.sub(r"(?<=fresh     )\d+\.\d +", same_width("~.~"), out)
    golden("host-list", masked(text))


def test_capacity(stored: Cli) -> None:
    golden("capacity", masked(stored.ok("capacity").stdout))
    done = stored.ok("capacity", "--flavor", "medium", "--by", "region")
    golden("capacity-medium-by-region", masked(done.stdout))
    assert done.stderr == "excluded: bm-03 (drained)\nexcluded: bm-04 (no snapshot)\n"


def test_place_explain_from_a_snapshot_file(stored: Cli, tmp_path: Path) -> None:
    snap = tmp_path / "fleet.json"
    stored.ok("host", "export-snapshot", str(snap))
    done = stored.run("place", "--from-snapshot", str(snap), "--cpus", "6", "--memory", "4G",
                      "--numa", "dedicated", "--explain")
    assert done.returncode == 0, done.stderr
    golden("place-explain", masked(done.stdout))


@pytest.fixture
def with_agent(cli: Cli, test_agent: Agent) -> Cli:
    cli.ok("host", "add", "t1", "--address", "local", "--socket", str(test_agent.socket))
    return cli


def test_vm_create_list_show(with_agent: Cli, test_agent: Agent) -> None:
    rules = ((UUID, "<uuid>"), (STAMP, "<time>"), (str(test_agent.storage), "<storage>"))
    created = with_agent.ok("vm", "create", "web-1", "--cpus", "2", "--memory", "512M",
                            "--disk", "2G").stdout
    golden("vm-create", masked(created, *rules))
    with_agent.ok("vm", "create", "db-1", "--flavor", "tiny")
    golden("vm-list", masked(with_agent.ok("vm", "list").stdout))
    golden("vm-show", masked(with_agent.ok("vm", "show", "web-1").stdout, *rules))


def test_ip_list(cli: Cli) -> None:
    cli.ok("ip", "pool", "add", "p1", "--vrf", "blue", "--cidr", "10.20.0.0/24",
           "--gateway", "10.20.0.1")
    cli.ok("ip", "pool", "add", "p2", "--vrf", "red", "--cidr", "192.168.7.0/29")
    cli.ok("ip", "allocate", "--vrf", "blue", "--owner", "web-1")
    cli.ok("ip", "allocate", "--vrf", "blue", "--address", "10.20.0.77", "--owner", "lb")
    cli.ok("ip", "allocate", "--vrf", "red", "--owner", "db-1")
    golden("ip-list", masked(cli.ok("ip", "list").stdout, (STAMP, "<time>")))


def test_request_list(cli: Cli, tmp_path: Path) -> None:
    people = make_people(tmp_path)
    install_policy(cli, tmp_path, people)
    cli.ok("ip", "pool", "add", "p1", "--vrf", "blue", "--cidr", "10.20.0.0/24")
    cli.ok("ip", "allocate", "--vrf", "blue", "--owner", "web-1")
    cli.ok("ip", "allocate", "--vrf", "blue", "--owner", "web-2")
    held = as_(cli, people["alice"], "ip", "release", "10.20.0.1", "--vrf", "blue")
    assert held.returncode == 4, held.stderr  # type: ignore[attr-defined]
    golden("request-held", masked(held.stdout))  # type: ignore[attr-defined]
    as_(cli, people["bob"], "ip", "update", "10.20.0.2", "--vrf", "blue", "--owner", "web-9")
    rejected = as_(cli, people["carol"], "request", "reject", "2", "--reason", "not now")
    assert rejected.returncode == 0, rejected.stderr  # type: ignore[attr-defined]
    golden("request-list", masked(cli.ok("request", "list").stdout))
