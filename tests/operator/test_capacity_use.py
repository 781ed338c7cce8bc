"""Measured VM use in stored snapshots (``vm_use``) reaches `ppec capacity` and the notes of
`ppec place --explain`; snapshots from agents that did not measure stay readable."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ppec.placement import HostSnapshot
from tests.placement.fleets import store_fleet, topology
from tests.realparts import Cli


def _host(name: str) -> HostSnapshot:
    return HostSnapshot(name=name, topology=topology(1, 8, 1, 16), region="eu",
                        taken_at=time.time(), storage_free_bytes=100 << 30)


def _fleet(cli: Cli) -> None:
    # a measured: its VMs used 2 of its 8 CPUs and 3000 MiB; b's agent predates vm_use.
    store_fleet(cli.db, [_host("a")], vm_use={"cpu_used": 2.0, "rss_mib": 3000, "vms": {}})
    store_fleet(cli.db, [_host("b")])


def test_capacity_reports_measured_use_and_none_for_old_snapshots(cli: Cli) -> None:
    _fleet(cli)
    doc = json.loads(cli.ok("capacity", "-o", "json").stdout)
    groups = {g["group"]: g for g in doc["groups"]}
    a, b = groups["a"], groups["b"]
    assert (a["vm_cpu_used"], a["vm_cpu_percent"], a["vm_rss_mib"], a["vm_use_hosts"]) == (
        2.0, 25.0, 3000, 1)
    assert (b["vm_cpu_used"], b["vm_cpu_percent"], b["vm_rss_mib"], b["vm_use_hosts"]) == (
        None, None, None, 0)
    # The region's figure is over the CPUs of the hosts that measured, not all 16.
    region = json.loads(cli.ok("capacity", "--by", "region", "-o", "json").stdout)
    assert region["groups"][0]["vm_cpu_percent"] == 25.0
    assert (doc["total"]["vm_cpu_used"], doc["total"]["vm_use_cpus"]) == (2.0, 8)
    rows = {ln.split()[0]: ln.split() for ln in cli.ok("capacity").stdout.splitlines()}
    assert rows["a"][-2:] == ["25.0", "3000"] and rows["b"][-2:] == ["-", "-"]
    numa = json.loads(cli.ok("capacity", "--by", "numa", "-o", "json").stdout)
    assert all(g["vm_cpu_used"] is None for g in numa["groups"])


def test_place_explain_notes_what_the_vms_use(cli: Cli, tmp_path: Path) -> None:
    _fleet(cli)
    snap = tmp_path / "fleet.json"
    cli.ok("host", "export-snapshot", str(snap))
    done = cli.ok("place", "--from-snapshot", str(snap), "--cpus", "1", "--memory", "1G",
                  "--explain")
    lines = {ln.split()[1]: ln for ln in done.stdout.splitlines()[1:]}
    assert "VMs use 2.0 of 8 CPUs, 3000 MiB RSS" in lines["a"]
    assert "VMs use" not in lines["b"]
