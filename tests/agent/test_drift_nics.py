"""NIC drift made with virsh behind ppec's back on a real QEMU agent: NIC_ADDED,
NIC_REMOVED and NIC_CHANGED, each resolved when undone (issue 24)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.test_drift import alerts
from tests.netparts import Lan, lan, net_reason
from tests.realparts import Agent, Cli, unique, virsh

TINY = ("--cpus", "1", "--memory", "64M", "--disk", "16M")


@pytest.fixture
def two_lans() -> Iterator[tuple[Lan, Lan]]:
    reason = net_reason()
    if reason:
        pytest.skip(f"Linux bridges and namespaces unavailable: {reason}")
    with lan("10.95.0.1/24") as blue, lan("10.96.0.1/24") as other:
        yield blue, other


def _iface_xml(vm: str, mac: str) -> str:
    for el in ET.fromstring(virsh("dumpxml", "--inactive", vm)).findall("devices/interface"):
        found = el.find("mac")
        if found is not None and found.get("address") == mac:
            return ET.tostring(el, encoding="unicode")
    raise AssertionError(f"{vm} has no interface {mac}")


def test_nic_drift_is_reported_and_resolves_when_undone(
        cli: Cli, qemu_dir: Path, two_lans: tuple[Lan, Lan]) -> None:
    blue, other = two_lans
    agent = Agent(qemu_dir / "drift", host=unique("q"), libvirt_uri="qemu:///system",
                  extra={"drift_interval": 0, "cpu_overcommit": 12.0,
                         "networks": {"blue": {"bridge": blue.bridge}}}).start()
    try:
        cli.ok("host", "add", "q", "--address", "local", "--socket", str(agent.socket),
               "--vrf", "blue")
        cli.ok("ip", "pool", "add", "b", "--vrf", "blue", "--cidr", "10.95.0.0/24")
        added, removed, moved = (unique(p) for p in ("add", "rm", "mv"))
        mine = {added, removed, moved}
        macs = {}
        for name in (added, removed, moved):
            vm = json.loads(cli.ok("vm", "create", name, *TINY, "-o", "json").stdout)
            macs[name] = vm["nics"][0]["mac"]
        assert alerts(cli, mine) == (0, [])

        # Added live (QEMU plugs a NIC without the guest's help); removed and moved in the
        # saved config (a live unplug waits for a guest OS these VMs do not run).
        virsh("attach-interface", added, "bridge", other.bridge, "--model", "virtio",
              "--mac", "02:99:00:00:00:01", "--live")
        ours = _iface_xml(removed, macs[removed])
        (qemu_dir / "rm.xml").write_text(ours)
        virsh("detach-device", removed, str(qemu_dir / "rm.xml"), "--config")
        original = _iface_xml(moved, macs[moved])
        (qemu_dir / "mv.xml").write_text(original.replace(blue.bridge, other.bridge))
        virsh("update-device", moved, str(qemu_dir / "mv.xml"), "--config")

        code, found = alerts(cli, mine)
        assert code == 10
        assert {(a["code"], a["object"]) for a in found} == {
            ("NIC_ADDED", added), ("NIC_REMOVED", removed), ("NIC_CHANGED", moved)}, found
        detail = {a["code"]: a["detail"] for a in found}
        assert detail["NIC_ADDED"] == (f"live: NIC 02:99:00:00:00:01 on {other.bridge} "
                                       f"attached outside ppec")
        assert detail["NIC_REMOVED"] == (f"config: NIC {macs[removed]} ({blue.bridge}) "
                                         f"detached outside ppec")
        assert detail["NIC_CHANGED"] == (f"config: NIC {macs[moved]} is on {other.bridge}, "
                                         f"ppec put it on {blue.bridge}")

        # Undone: each alert resolves. The live-only NIC goes with a power cycle (its live
        # unplug would wait for a guest OS).
        cli.ok("vm", "stop", added, "--force")
        cli.ok("vm", "start", added)
        virsh("attach-device", removed, str(qemu_dir / "rm.xml"), "--config")
        (qemu_dir / "mv.xml").write_text(original)
        virsh("update-device", moved, str(qemu_dir / "mv.xml"), "--config")
        assert alerts(cli, mine) == (0, [])
        for name in mine:
            cli.ok("vm", "delete", name)
    finally:
        agent.kill()
