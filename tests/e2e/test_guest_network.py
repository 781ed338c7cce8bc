"""A VM people can reach (issue 24): real guests booted by ppec on a NIC ppec made answer
ping at exactly the address ppec reports, sent from a namespace this test made; the seed
they booted from is read back from its ISO and checked with Debian's cloud-init."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cloudinit import cloudinit_reason, net_convert, schema_check, user_data_parts
from tests.netparts import Lan, bridge_ports, lan, net_reason, taps_with_mac
from tests.realparts import Agent, Cli, make_key, qemu_pid, unique, virsh

USER_DATA = "#cloud-config\nruncmd:\n  - [touch, /run/made-by-operator]\n"


@pytest.fixture
def blue() -> Iterator[Lan]:
    for reason in (net_reason(), cloudinit_reason()):
        if reason:
            pytest.skip(reason)
    with lan("10.97.0.1/24") as net:
        yield net


@pytest.fixture
def booted(cli: Cli, qemu_dir: Path, guest: Path, blue: Lan) -> Iterator[tuple[Cli, Agent]]:
    agent = Agent(qemu_dir / "agent", host=unique("g"), libvirt_uri="qemu:///system",
                  extra={"cpu_overcommit": 12.0, "image_dir": str(guest),
                         "domain_type": "qemu",
                         "networks": {"blue": {"bridge": blue.bridge}}}).start()
    cli.ok("host", "add", "g", "--address", "local", "--socket", str(agent.socket),
           "--vrf", "blue")
    cli.ok("ip", "pool", "add", "blue-1", "--vrf", "blue", "--cidr", "10.97.0.0/24",
           "--gateway", "10.97.0.1", "--dns", "10.97.0.53")
    yield cli, agent
    agent.kill()


def _create(cli: Cli, guest: Path, name: str, *extra: str) -> dict[str, object]:
    done = cli.ok("vm", "create", name, "--cpus", "1", "--memory", "192M", "--disk", "16M",
                  "--kernel", str(guest / "vmlinuz"), "--initrd", str(guest / "initrd.img"),
                  "--cmdline", "console=ttyS0", *extra, "-o", "json")
    return dict(json.loads(done.stdout))


def _iso_file(iso: Path, name: str) -> str:
    return subprocess.run(["isoinfo", "-i", str(iso), "-R", "-x", f"/{name}"],
                          capture_output=True, text=True, check=True).stdout


def test_guests_answer_ping_at_the_address_ppec_reports(
        booted: tuple[Cli, Agent], guest: Path, blue: Lan, tmp_path: Path) -> None:
    cli, agent = booted
    pub = tmp_path / "k.pub"
    make_key(tmp_path / "k")
    ud = tmp_path / "user-data"
    ud.write_text(USER_DATA)
    first = _create(cli, guest, "ping-1", "--ssh-key", str(pub), "--user-data", str(ud))
    second = _create(cli, guest, "ping-2")
    views = {}
    for name in ("ping-1", "ping-2"):
        views[name] = json.loads(cli.ok("vm", "show", name, "-o", "json").stdout)
    for vm in (first, second):
        shown = views[str(vm["name"])]
        [nic] = shown["nics"]
        assert nic == vm["nics"][0]  # type: ignore[index]
        address = nic["address"].split("/")[0]
        blue.wait_ping(address, timeout=120)
        # The guest answered with the MAC ppec chose and recorded.
        assert blue.arp()[address] == nic["mac"]
        [iface] = [i for i in virsh("domiflist", str(vm["name"])).splitlines()
                   if nic["mac"] in i]
        assert blue.bridge in iface.split() and "virtio" in iface.split()
        assert nic["target"] in bridge_ports(blue.bridge)
    a, b = (views[n]["nics"][0] for n in ("ping-1", "ping-2"))
    assert (a["address"], b["address"]) == ("10.97.0.2/24", "10.97.0.3/24")
    assert a["mac"] != b["mac"]

    # The seed it booted from, read back from the ISO.
    iso = agent.storage / "ping-1-seed.iso"
    network = _iso_file(iso, "network-config")
    rendered = net_convert(network, tmp_path / "net")
    assert a["mac"] in rendered and "10.97.0.2/24" in rendered and "10.97.0.1" in rendered
    user_data = _iso_file(iso, "user-data")
    parts = user_data_parts(user_data)
    assert [t for t, _ in parts] == ["text/cloud-config", "text/cloud-config"]
    assert parts[0][1] == USER_DATA
    ours = parts[1][1]
    assert pub.read_text().strip() in ours and "hostname: \"ping-1\"" in ours
    schema_check(ours, tmp_path / "schema", allow_unknown=True)
    schema_check(USER_DATA, tmp_path / "schema2")
    meta = _iso_file(iso, "meta-data")
    assert meta.startswith("instance-id: ") and "local-hostname: \"ping-1\"" in meta

    # TCG: QEMU runs the 'maximum' CPU model.
    pid = qemu_pid("ping-1")
    assert pid is not None
    words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert words[words.index(b"-cpu") + 1].split(b",")[0] == b"max"

    # Delete leaves no tap, MAC or address.
    for name in ("ping-1", "ping-2"):
        cli.ok("vm", "delete", name)
    for nic in (a, b):
        assert taps_with_mac(nic["mac"]) == []
        assert not blue.ping(nic["address"].split("/")[0])
    assert bridge_ports(blue.bridge) == [blue.port]
    assert json.loads(cli.ok("ip", "list", "-o", "json").stdout)["addresses"] == []
