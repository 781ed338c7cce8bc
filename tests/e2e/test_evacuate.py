"""Emptying a host for maintenance (issue 26): `ppec host evacuate` drains it, plans every
VM with placement's rules holding across the whole plan (an HA group's members never meet),
moves them live between real libvirtds, names a VM that fits nowhere (exit 5) and still
moves the others; `ppec host restore --move-back` brings them home."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.migparts import MigHost, Peer, make_hosts
from tests.realparts import Cli, make_key


@pytest.fixture
def three(cli: Cli, qemu_dir: Path, guest: Path, libvirt_peers: list[Peer],
          sshd_ready: None) -> Iterator[list[MigHost]]:
    """h1 (no memory kept back) and h2, h3 that keep 8 GiB for themselves."""
    key = qemu_dir / "operator_ed25519"
    hosts = make_hosts(qemu_dir / "fleet", libvirt_peers, make_key(key), lambda name: {
        "image_dir": str(guest), "reserved_memory": "0" if name == "h1" else "8G"})
    for h in hosts:
        cli.ok(*h.add_args(key), "--accept-new-host-key")
    yield hosts
    for h in hosts:
        h.agent.kill()
        h.sshd.stop()
        h.peer.clean(qemu_dir)


def _create(cli: Cli, guest: Path, name: str, host: str, *extra: str,
            memory: str = "128M") -> None:
    cli.ok("vm", "create", name, "--host", host, "--cpus", "1", "--memory", memory,
           "--disk", "16M", "--kernel", str(guest / "vmlinuz"), "--initrd",
           str(guest / "initrd.img"), "--cmdline", "console=ttyS0", *extra)


def _hosts_of(cli: Cli) -> dict[str, str]:
    return {v["name"]: v["host"]
            for v in json.loads(cli.ok("vm", "list", "-o", "json").stdout)["vms"]}


def _on_peer(h: MigHost) -> set[str]:
    """What libvirt itself runs there, and what the host's ledger owns."""
    running = set(h.peer.virsh("list", "--name").split())
    assert running == set(h.agent.ledger_rows()), (running, h.agent.ledger_rows())
    return running


def test_six_vms_leave_with_their_ha_group_kept_and_come_back(
        cli: Cli, guest: Path, three: list[MigHost]) -> None:
    h1, h2, h3 = three
    six = ["a1", "a2", "a3", "a4", "a5", "ha-a"]
    for name in six[:5]:
        _create(cli, guest, name, "h1")
    _create(cli, guest, "ha-a", "h1", "--ha-group", "pair")
    _create(cli, guest, "ha-b", "h2", "--ha-group", "pair")   # its partner, not on h1

    plan = json.loads(cli.ok("host", "evacuate", "h1", "--dry-run", "-o", "json").stdout)
    assert sorted(m["name"] for m in plan["moves"]) == sorted(six)
    assert {m["name"]: m["to"] for m in plan["moves"]}["ha-a"] == "h3"
    assert _on_peer(h1) == set(six)                          # a plan moves nothing
    assert not json.loads(cli.ok("host", "show", "h1", "-o", "json").stdout)["drained"]

    done = cli.run("host", "evacuate", "h1", "--max-parallel", "2", "-o", "json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert [(r["name"], r["state"]) for r in doc["results"]] == [(n, "moved") for n in six]
    where = _hosts_of(cli)
    assert where["ha-a"] == "h3" and where["ha-b"] == "h2"   # the group never met
    assert {where[n] for n in six} == {"h2", "h3"}
    assert _on_peer(h1) == set()
    assert _on_peer(h2) | _on_peer(h3) == {*six, "ha-b"}
    assert json.loads(cli.ok("host", "show", "h1", "-o", "json").stdout)["drained"]
    # Drained: a new VM goes elsewhere.
    _create(cli, guest, "new", "h2")

    back = cli.run("host", "restore", "h1", "--move-back", "--max-parallel", "2",
                   "-o", "json")
    assert back.returncode == 0, back.stderr
    assert sorted(r["name"] for r in json.loads(back.stdout)["results"]) == sorted(six)
    where = _hosts_of(cli)
    assert {n: where[n] for n in six} == dict.fromkeys(six, "h1")
    assert _on_peer(h1) == set(six)
    assert not json.loads(cli.ok("host", "show", "h1", "-o", "json").stdout)["drained"]


def test_a_vm_that_fits_nowhere_is_named_and_the_others_still_move(
        cli: Cli, guest: Path, three: list[MigHost]) -> None:
    h1, h2, h3 = three
    small = ["b1", "b2", "b3", "b4", "b5"]
    for name in small:
        _create(cli, guest, name, "h1")
    _create(cli, guest, "big", "h1", memory="20G")   # h2 and h3 keep 8 GiB back: no room
    done = cli.run("host", "evacuate", "h1", "-o", "json")
    assert done.returncode == 5, done.stderr
    results = {r["name"]: r for r in json.loads(done.stdout)["results"]}
    assert results["big"]["state"] == "unplaced"
    why = results["big"]["error"]
    assert why["code"] == "NO_CAPACITY" and "memory" in why["message"] and \
        "h2" in why["message"] and "h3" in why["message"]
    assert all(results[n]["state"] == "moved" for n in small)
    assert _on_peer(h1) == {"big"}
    assert _on_peer(h2) | _on_peer(h3) == set(small)
    # People read one line per VM, and the one that fits nowhere with its reason.
    again = cli.run("host", "evacuate", "h1")
    assert again.returncode == 1, again.stderr   # the only VM left fits nowhere
    assert "big: fits nowhere:" in again.stdout


def test_rebalance_apply_does_exactly_the_plan(cli: Cli, guest: Path,
                                               three: list[MigHost]) -> None:
    for name, host in (("r1", "h1"), ("r2", "h1"), ("r3", "h2"), ("r4", "h3")):
        _create(cli, guest, name, host)
    plan = json.loads(cli.ok("rebalance", "--goal", "pack", "-o", "json").stdout)
    assert plan["moves"] and plan["hosts_freed"], plan
    assert plan["score_after"] < plan["score_before"]
    assert _hosts_of(cli) == {"r1": "h1", "r2": "h1", "r3": "h2", "r4": "h3"}  # only a plan
    done = cli.run("rebalance", "--goal", "pack", "--apply", "-o", "json")
    assert done.returncode == 0, done.stderr
    applied = json.loads(done.stdout)
    assert applied["moves"] == plan["moves"]
    assert [(m["vm"], m["from"], m["to"], m["state"]) for m in applied["applied"]] == [
        (m["vm"], m["from"], m["to"], "moved") for m in plan["moves"]]
    expected = {"r1": "h1", "r2": "h1", "r3": "h2", "r4": "h3"}
    expected.update({m["vm"]: m["to"] for m in plan["moves"]})
    assert _hosts_of(cli) == expected
    for h in three:
        assert _on_peer(h) == {vm for vm, host in expected.items() if host == h.name}
    for freed in plan["hosts_freed"]:
        assert _on_peer(next(h for h in three if h.name == freed)) == set()
