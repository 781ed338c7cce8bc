"""`ppec place` on snapshot files: reasons per host, cost and power, bad input."""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest

from ppec.numa import Allocation
from ppec.placement import HostSnapshot
from tests.placement.fleets import store_fleet, topology
from tests.realparts import Cli


def host(name: str, **kw: object) -> HostSnapshot:
    base = HostSnapshot(name=name, topology=topology(2, 8, 1, 16), region="eu",
                        tags=frozenset({"ssd"}), taken_at=time.time(),
                        storage_free_bytes=1 << 40, power_idle_w=150, power_max_w=450)
    return replace(base, **kw)  # type: ignore[arg-type]


def export_file(cli: Cli, path: Path, hosts: list[HostSnapshot]) -> None:
    """The hosts into a store, as `ppec host add` and `ppec sync` leave them, and out again
    with the real `ppec host export-snapshot`: the file `place --from-snapshot` reads."""
    store_fleet(cli.db, hosts)
    done = cli.ok("host", "export-snapshot", str(path))
    assert f"wrote {len(hosts)} hosts" in done.stdout


def hold(cell_cpus: dict[int, int]) -> tuple[Allocation, ...]:
    """Dedicated VMs taking the first N CPUs of each cell (8 CPUs per cell, ids 0-15)."""
    return tuple(Allocation(f"x{c}", "dedicated", n, frozenset(range(c * 8, c * 8 + n)),
                            ((c, 1024),)) for c, n in cell_cpus.items() if n)


def test_explain_names_every_hosts_blocking_rule_and_numbers(cli: Cli, tmp_path: Path) -> None:
    snap = tmp_path / "fleet.json"
    export_file(cli, snap, [
        host("h1", drained=True),
        host("h2", region="us"),
        host("h3", tags=frozenset()),
        host("h4", allocations=hold({0: 2, 1: 4})),
        host("h5", topology=topology(1, 4, 1, 16)),
        host("h6", taken_at=time.time() - 7200),
        host("h7", reachable=False),
    ])
    done = cli.run("place", "--from-snapshot", str(snap), "--cpus", "8", "--memory", "4G",
                   "--numa", "dedicated", "--numa-nodes", "1", "--region", "eu", "--tag", "ssd",
                   "--explain")
    assert done.returncode == 3, done.stderr
    out = done.stdout
    assert "h1" in out and "[state] drained" in out
    assert "[region] region us, needs eu" in out
    assert "[tags] lacks tag(s) ssd" in out
    assert ("[numa] NUMA: node 0 has 6 free CPUs, needs 8; node 1 has 4 free CPUs, needs 8"
            in out)
    assert "[resources] 4 CPUs not dedicated, needs 8" in out
    # 7200 s when the file was written; a slow machine may take a second or two to run it.
    assert re.search(r"\[state\] snapshot 72\d\d s old \(limit 600 s\)", out), out
    assert "[state] unreachable: no snapshot yet" in out
    assert done.stderr.startswith("ppec: no host can take it: h1: [state] drained; ")
    doc = json.loads(cli.run("place", "--from-snapshot", str(snap), "--cpus", "8", "--memory",
                             "4G", "--numa", "dedicated", "--numa-nodes", "1", "--region",
                             "eu", "--tag", "ssd", "--explain", "-o", "json").stdout)
    assert doc["host"] is None
    by_host = {h["host"]: h for h in doc["hosts"]}
    assert by_host["h4"]["filters"]["numa"].startswith("NUMA: node 0 has 6 free CPUs")
    assert by_host["h4"]["filters"]["region"] is None


def test_default_policy_fills_the_busy_host_first(cli: Cli, tmp_path: Path) -> None:
    snap = tmp_path / "fleet.json"
    busy = host("busy", allocations=(Allocation("web", "shared", 2, frozenset(),
                                                ((-1, 2048),)),))
    export_file(cli, snap, [host("idle"), busy])
    done = cli.ok("place", "--from-snapshot", str(snap), "--cpus", "2", "--memory", "2G",
                  "--explain")
    lines = done.stdout.splitlines()
    assert lines[1].split()[:2] == ["1", "busy"]
    assert lines[2].split()[:2] == ["2", "idle"]
    assert "busy: the VM adds 38 W" in done.stdout   # (450 - 150) W / 16 CPUs x 2
    assert "idle: waking it adds 188 W" in done.stdout   # + 150 W idle draw
    doc = json.loads(cli.ok("place", "--from-snapshot", str(snap), "--cpus", "2", "--memory",
                            "2G", "-o", "json").stdout)
    assert doc["host"] == "busy"
    assert [h["host"] for h in doc["hosts"]] == ["busy", "idle"]


@pytest.mark.parametrize(("args", "words"), [
    (["--region", "mars"], "unknown region 'mars'; regions in the inventory: eu"),
    (["--vrf", "red"], "unknown VRF 'red': no host is in it"),
    (["--ha-group", "web tier"], "invalid HA group name 'web tier'"),
    (["--spread", "rack"], "--spread applies to an HA group"),
    (["--threads", "isolate"], "they need --numa dedicated"),
    (["--numa", "dedicated", "--numa-nodes", "3", "--cpus", "2"], "more than the 2 vCPUs"),
    (["--memory", "2X"], "invalid memory '2X'"),
])
def test_bad_input_exits_2(cli: Cli, tmp_path: Path, args: list[str], words: str) -> None:
    snap = tmp_path / "fleet.json"
    export_file(cli, snap, [host("h1")])
    base = {"--cpus": "1", "--memory": "1G"}
    for k in list(base):
        if k in args:
            del base[k]
    done = cli.run("place", "--from-snapshot", str(snap), *[x for kv in base.items()
                                                            for x in kv], *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert words in done.stderr
    assert done.stdout == ""


def test_bad_snapshot_files(cli: Cli, tmp_path: Path) -> None:
    missing = cli.run("place", "--from-snapshot", str(tmp_path / "nope.json"), "--cpus", "1",
                      "--memory", "1G")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    (tmp_path / "x.json").write_text('{"format": "other"}')
    wrong = cli.run("place", "--from-snapshot", str(tmp_path / "x.json"), "--cpus", "1",
                    "--memory", "1G")
    assert wrong.returncode == 2 and "is not a ppec snapshot export" in wrong.stderr


def test_export_then_place_from_the_file_decides_as_the_store_does(cli: Cli,
                                                                   tmp_path: Path) -> None:
    """The round trip: `host export-snapshot` writes what `place` read from the store, so
    the decision and every reason come out the same from the file, anywhere, later."""
    snap = tmp_path / "fleet.json"
    export_file(cli, snap, [host("h1", allocations=hold({0: 6})), host("h2", region="us"),
                            host("h3", allocations=hold({0: 2, 1: 2})), host("h4", drained=True)])
    ask = ["--cpus", "4", "--memory", "2G", "--numa", "dedicated", "--explain", "-o", "json"]
    from_store = json.loads(cli.ok("place", *ask).stdout)
    from_file = json.loads(cli.ok("place", "--from-snapshot", str(snap), *ask).stdout)
    assert from_file == from_store
    assert from_file["host"] == "h1"
    assert [h["host"] for h in from_file["hosts"] if h["passed"]] == ["h1", "h3", "h2"]
