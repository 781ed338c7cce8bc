"""`ppec rebalance` on simulated fleets (snapshot files): the plan improves its score, and
every move is replayed through `ppec place` on the fleet as the moves before it leave it:
placement must take the VM on that target (HA group included)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from ppec.numa import Allocation
from ppec.operator.snapshots import FORMAT
from ppec.placement import HostSnapshot
from tests.placement.fleets import snapshot_data, topology
from tests.realparts import Cli


def shared(name: str, vcpus: int, gib: int) -> Allocation:
    return Allocation(name, "shared", vcpus, frozenset(), ((-1, gib * 1024),))


def fleet_file(path: Path, vms: dict[str, list[Allocation]],
               groups: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Hosts of 8 CPUs and 32 GiB (150 W idle) holding ``vms``; HA groups spread by host."""
    now = time.time()
    hosts = []
    for name, allocs in vms.items():
        snap = HostSnapshot(name=name, topology=topology(1, 8, 1, 32), allocations=tuple(allocs),
                            taken_at=now, storage_free_bytes=1 << 40, power_idle_w=150)
        hosts.append({"inventory": {"name": name, "address": "local", "port": 22,
                                    "username": "root", "identity": "", "socket": "/x",
                                    "region": "", "rack": "", "power_domain": "", "vrf": "",
                                    "cost": 0.0, "tags": [], "drained": False,
                                    "added_at": "t", "power_idle_w": 150.0,
                                    "power_max_w": 400.0},
                      "snapshot": snapshot_data(snap)})
    where = {a.vm: h for h, allocs in vms.items() for a in allocs}
    doc = {"format": FORMAT, "exported_at": now, "hosts": hosts, "ha_groups": {
        g: {"spread": "host", "members": [[m, where[m], where[m]] for m in members]}
        for g, members in (groups or {}).items()}}
    path.write_text(json.dumps(doc))
    return doc


def replay(cli: Cli, tmp_path: Path, doc: dict[str, Any], moves: list[dict[str, str]]) -> None:
    """Each move through `ppec place` on the fleet so far, then applied to it."""
    for i, move in enumerate(moves):
        hosts = {h["inventory"]["name"]: h for h in doc["hosts"]}
        [alloc] = [a for a in hosts[move["from"]]["snapshot"]["allocations"]
                   if a["vm"] == move["vm"]]
        group = next((g for g, v in doc["ha_groups"].items()
                      if any(m[0] == move["vm"] for m in v["members"])), "")
        for v in doc["ha_groups"].values():       # its own place is given up by moving
            v["members"] = [m for m in v["members"] if m[0] != move["vm"]]
        step = tmp_path / f"step-{i}.json"
        step.write_text(json.dumps(doc))
        mib = sum(m for _, m in alloc["memory"])
        done = cli.run("place", "--from-snapshot", str(step), "--cpus", str(alloc["vcpus"]),
                       "--memory", f"{mib}M", *(["--ha-group", group] if group else []),
                       "--explain", "-o", "json")
        verdicts = {r["host"]: r["passed"] for r in json.loads(done.stdout)["hosts"]}
        assert verdicts[move["to"]], (move, done.stdout)
        hosts[move["from"]]["snapshot"]["allocations"].remove(alloc)
        hosts[move["to"]]["snapshot"]["allocations"].append(alloc)
        if group:
            doc["ha_groups"][group]["members"].append([move["vm"], move["to"], move["to"]])


def test_pack_frees_hosts_and_every_move_keeps_placements_rules(cli: Cli,
                                                                tmp_path: Path) -> None:
    f = tmp_path / "fleet.json"
    doc = fleet_file(f, {
        "h1": [shared("a1", 2, 8), shared("a2", 2, 8), shared("a3", 1, 4)],
        "h2": [shared("g-1", 1, 4)],
        "h3": [shared("g-2", 1, 4), shared("b1", 1, 2)],
        "h4": [shared("c1", 2, 6)],
        "h5": []}, groups={"g": ["g-1", "g-2"]})
    done = cli.run("rebalance", "--goal", "pack", "--from-snapshot", str(f), "-o", "json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["score_after"] < plan["score_before"]
    assert plan["hosts_freed"] and plan["idle_watts_saved"] == 150 * len(plan["hosts_freed"])
    assert "h5" not in {m["to"] for m in plan["moves"]}        # an empty host stays empty
    replay(cli, tmp_path, doc, plan["moves"])
    members = {m[1] for m in doc["ha_groups"]["g"]["members"]}
    assert len(members) == 2                                   # the group never met
    busy = {h["inventory"]["name"] for h in doc["hosts"] if h["snapshot"]["allocations"]}
    assert len(busy) == 4 - len(plan["hosts_freed"])
    # --max-moves bounds the plan; a fleet already packed needs none.
    one = json.loads(cli.ok("rebalance", "--from-snapshot", str(f), "--max-moves", "1",
                            "-o", "json").stdout)
    assert len(one["moves"]) <= 1
    packed = tmp_path / "packed.json"
    fleet_file(packed, {"h1": [shared("a1", 2, 8)], "h2": []})
    assert json.loads(cli.ok("rebalance", "--from-snapshot", str(packed), "-o",
                             "json").stdout)["moves"] == []


def test_spread_evens_the_load_and_every_move_keeps_placements_rules(
        cli: Cli, tmp_path: Path) -> None:
    f = tmp_path / "fleet.json"
    doc = fleet_file(f, {
        "h1": [shared(f"v{i}", 1, 4) for i in range(6)],
        "h2": [shared("w1", 1, 4)],
        "h3": []})
    plan = json.loads(cli.ok("rebalance", "--goal", "spread", "--from-snapshot", str(f),
                             "-o", "json").stdout)
    assert plan["moves"] and plan["score_after"] < plan["score_before"]
    replay(cli, tmp_path, doc, plan["moves"])
    counts = sorted(len(h["snapshot"]["allocations"]) for h in doc["hosts"])
    assert counts[-1] - counts[0] <= 1


@pytest.mark.parametrize(("args", "words"), [
    (["--goal", "tidy"], "--goal"),
    (["--apply"], "cannot run on --from-snapshot"),
])
def test_bad_input_exits_2(cli: Cli, tmp_path: Path, args: list[str], words: str) -> None:
    f = tmp_path / "fleet.json"
    fleet_file(f, {"h1": [shared("a1", 1, 1)]})
    done = cli.run("rebalance", "--from-snapshot", str(f), *args)
    assert done.returncode == 2 and words in done.stderr, done.stderr


def test_a_member_leaves_its_group_only_in_the_copy_placement_decides_on() -> None:
    """Deciding where an HA member goes gives up its own key in a copy of the fleet: the
    fleet itself keeps it until the move is planned (an evacuation that cannot place the
    VM leaves it holding its key)."""
    from ppec.operator.choose import Fleet
    from ppec.operator.fleetsim import without_member
    fleet = Fleet([], {"g": [("a", "h1", "h1"), ("b", "h2", "h2")]}, {"g": "host"})
    trial = without_member(fleet, "a", "g")
    assert trial.members["g"] == [("b", "h2", "h2")]
    assert fleet.members["g"] == [("a", "h1", "h1"), ("b", "h2", "h2")]
    assert without_member(fleet, "a", "") is fleet
