"""The test LAN helpers (tests/netparts), the cloud-init checks (tests/cloudinit) and the
test guest's networking, each against the real part: bridges and namespaces of this kernel,
Debian's cloud-init 22.4, the tiny guest under QEMU."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import netparts
from tests.cloudinit import (
    CLOUD_INIT,
    cloudinit_reason,
    cloudinit_user_data_parts,
    net_convert,
    schema_check,
    user_data_parts,
)
from tests.netparts import bridge_ports, lan, make_lan, net_reason, taps_with_mac
from tests.realparts import unique, virsh

MACS = ("02:70:70:0a:1b:2c", "02:70:70:0a:1b:2d")


def network_config(address: str = "10.93.0.2/24", gateway: str = "10.93.0.1",
                   route_to: str = "0.0.0.0/0") -> str:
    """The document the guest receives: one static NIC, one DHCP NIC (json.dumps, indent=1,
    as ppec writes it)."""
    doc = {"version": 2, "ethernets": {
        "nic0": {"match": {"macaddress": MACS[0]}, "mtu": 1500, "addresses": [address],
                 "routes": [{"to": route_to, "via": gateway}],
                 "nameservers": {"addresses": ["10.93.0.53"]}},
        "nic1": {"match": {"macaddress": MACS[1]}, "dhcp4": True}}}
    return json.dumps(doc, indent=1) + "\n"


@pytest.fixture
def net_ready() -> None:
    reason = net_reason()
    if reason:
        pytest.skip(f"test LANs unavailable: {reason}")


@pytest.fixture
def cloudinit_ready() -> None:
    reason = cloudinit_reason()
    if reason:
        pytest.skip(f"real cloud-init unavailable: {reason}")


def assert_gone(links: list[str], netns: str) -> None:
    """None of these is left (other tests make LANs meanwhile: look at these names only)."""
    assert [name for name in links if (netparts.SYS_NET / name).exists()] == []
    assert netns not in netparts._netns_names()


def addresses(dev: str) -> str:
    return subprocess.run(["ip", "-o", "addr", "show", "dev", dev], check=True,
                          capture_output=True, text=True).stdout.strip()


# --- the test LAN ---------------------------------------------------------------------------

def test_lan_is_made_to_the_rule_and_removed_without_a_trace(net_ready: None) -> None:
    net = make_lan("10.93.0.1/24")
    try:
        assert len(net.bridge) <= 15 and len(net.port) <= 15 and len(net.inside) <= 15
        assert bridge_ports(net.bridge) == [net.port]
        # Neither the bridge nor its port carries any host address, not even link-local.
        assert addresses(net.bridge) == ""
        assert addresses(net.port) == ""
        assert Path(f"/proc/sys/net/ipv6/conf/{net.bridge}/disable_ipv6").read_text() == "1\n"
        inside = net.run("ip", "-o", "addr", "show", "dev", net.inside).stdout
        assert " 10.93.0.1/24 " in inside and "inet6" not in inside
        assert net.ping("127.0.0.1") and net.ping(net.address(1))
        assert not net.ping(net.address(2), timeout_s=0.3)       # nobody there yet
        assert net.arp() == {}                                    # unanswered: no lladdr
        with pytest.raises(ValueError, match="neither loopback nor on the test LAN"):
            net.ping("192.0.2.1")
        with pytest.raises(AssertionError, match=r"10\.93\.0\.2 did not answer"):
            net.wait_ping(net.address(2), timeout=0.5)
    finally:
        net.remove()
    assert_gone([net.bridge, net.port, net.inside], net.netns)


def test_a_failed_step_removes_what_was_made(net_ready: None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real = netparts._run
    made: list[str] = []

    def failing(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        if args[:3] in (("ip", "link", "add"), ("ip", "netns", "add")):
            made.append(args[3])
            if "peer" in args:
                made.append(args[args.index("peer") + 2])
        if "addr" in args and "add" in args:       # the last steps: all the rest is made
            raise AssertionError("injected failure")
        return real(*args, **kw)   # type: ignore[arg-type]

    monkeypatch.setattr(netparts, "_run", failing)
    with pytest.raises(AssertionError, match="injected failure"):
        make_lan()
    bridge, netns, port, inside = made
    assert bridge.startswith("pb") and netns.startswith("ppec-lan-")
    assert_gone([bridge, port, inside], netns)


def test_the_context_manager_removes_the_lan_when_the_test_fails(net_ready: None) -> None:
    made = []
    with pytest.raises(RuntimeError), lan("10.94.0.1/24") as net:
        made.append(net)
        assert net.address(7) == "10.94.0.7" and net.cidr(7) == "10.94.0.7/24"
        raise RuntimeError("the test failed")
    assert_gone([made[0].bridge, made[0].port, made[0].inside], made[0].netns)


def test_taps_are_found_by_the_guest_mac_or_its_fe_form(net_ready: None) -> None:
    tag = uuid.uuid4().hex[:8]
    mac = f"02:{tag[0:2]}:{tag[2:4]}:{tag[4:6]}:{tag[6:8]}:01"
    one, peer = f"pt{tag}", f"pu{tag}"
    subprocess.run(["ip", "link", "add", one, "address", "fe" + mac[2:], "type", "veth",
                    "peer", "name", peer, "address", mac], check=True, capture_output=True)
    try:
        assert taps_with_mac(mac.upper()) == sorted([one, peer])
        assert taps_with_mac("02:00:00:00:00:01") == []
    finally:
        subprocess.run(["ip", "link", "del", one], check=True, capture_output=True)


# --- cloud-init 22.4 ------------------------------------------------------------------------

def test_net_convert_renders_the_guest_network_config(cloudinit_ready: None,
                                                      tmp_path: Path) -> None:
    out = net_convert(network_config(), tmp_path)
    assert out.count("# FILE etc/systemd/network/") == 2
    for mac in MACS:
        assert f"MACAddress={mac}" in out
    assert "Address=10.93.0.2/24" in out
    assert "Destination=0.0.0.0/0" in out and "Gateway=10.93.0.1" in out
    assert "MTUBytes=1500" in out and "DNS=10.93.0.53" in out and "DHCP=ipv4" in out
    eni = net_convert(network_config(), tmp_path, output_kind="eni")
    assert "post-up route add default gw 10.93.0.1" in eni


def test_net_convert_names_mac_matched_nics_as_the_guest_does(
        cloudinit_ready: None, net_ready: None, tmp_path: Path) -> None:
    # Where no NIC has the MAC, cloud-init names the entry by its id; in the guest, by the
    # NIC that has it.
    assert "Name=nic0" in net_convert(network_config(), tmp_path)
    out = net_convert(network_config(), tmp_path, nics={"eth0": MACS[0], "eth1": MACS[1]})
    assert "Name=eth0" in out and "Name=eth1" in out and "nic0" not in out


def test_net_convert_refuses_what_cloud_init_refuses(cloudinit_ready: None,
                                                     tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="Address default is not a valid ip address"):
        net_convert(network_config(route_to="default"), tmp_path)
    with pytest.raises(AssertionError, match="net-convert refused"):
        net_convert(network_config(address="10.93.0.300/24"), tmp_path)


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdRzdLdtPYxvPDnDSGd5mxpaSdgzA5TzAAjrtfV7vPo a@b"


def test_schema_check_passes_a_valid_cloud_config(cloudinit_ready: None,
                                                  tmp_path: Path) -> None:
    schema_check(f"#cloud-config\nhostname: x\nssh_authorized_keys: [\"{KEY}\"]\n", tmp_path)


@pytest.mark.parametrize(("doc", "said"), [
    ("#cloud-config\nhostname: x\nssh_authorized_keys: 5\n", "is not of type 'array'"),
    ("hostname: x\n", 'needs to begin with "#cloud-config"'),
    ("#cloud-config\nhostname: [x\n", "not valid yaml"),
    ("#cloud-config\nssh_authorised_keys: [a]\n", "ssh_authorised_keys"),   # 22.4 is silent
])
def test_schema_check_fails_an_invalid_one(cloudinit_ready: None, tmp_path: Path,
                                           doc: str, said: str) -> None:
    with pytest.raises(AssertionError, match=said):
        schema_check(doc, tmp_path)


def test_user_data_parts_split_as_cloud_init_splits(cloudinit_ready: None,
                                                    tmp_path: Path) -> None:
    config = f"#cloud-config\nhostname: x\nssh_authorized_keys: [\"{KEY}\"]\n"
    script = "#!/bin/sh\necho hello\n"
    (tmp_path / "config").write_text(config)
    (tmp_path / "script").write_text(script)
    mime = subprocess.run([CLOUD_INIT, "devel", "make-mime", "-a",
                           f"{tmp_path / 'config'}:cloud-config", "-a",
                           f"{tmp_path / 'script'}:x-shellscript"],
                          check=True, capture_output=True, text=True).stdout
    parts = user_data_parts(mime)
    assert parts == [("text/cloud-config", config), ("text/x-shellscript", script)]
    assert cloudinit_user_data_parts(mime, tmp_path) == parts
    for single in (config, script, "just text\n"):
        assert user_data_parts(single) == cloudinit_user_data_parts(single, tmp_path)


# --- the test guest on a test LAN -----------------------------------------------------------

@pytest.fixture
def lan_net(net_ready: None) -> Iterator[netparts.Lan]:
    with lan("10.93.0.1/24") as net:
        yield net


@pytest.mark.libvirt_qemu
def test_the_guest_applies_its_seed_network_config(guest: Path, qemu_dir: Path,
                                                   lan_net: netparts.Lan) -> None:
    seed_dir = qemu_dir / "seed"
    seed_dir.mkdir()
    (seed_dir / "network-config").write_text(network_config(lan_net.cidr(2),
                                                            lan_net.address(1)))
    (seed_dir / "meta-data").write_text("instance-id: i-1\nlocal-hostname: g\n")
    seed = qemu_dir / "seed.iso"
    subprocess.run(["genisoimage", "-quiet", "-output", str(seed), "-volid", "cidata",
                    "-joliet", "-rock", str(seed_dir / "network-config"),
                    str(seed_dir / "meta-data")], check=True, capture_output=True)
    seed.chmod(0o644)
    log = qemu_dir / "console.log"
    nics = "".join(f"<interface type='bridge'><mac address='{mac}'/><source bridge="
                   f"'{lan_net.bridge}'/><model type='virtio'/></interface>" for mac in MACS)
    name = unique("netguest")
    (qemu_dir / "domain.xml").write_text(f"""<domain type='qemu'><name>{name}</name>
<memory unit='MiB'>256</memory><vcpu>1</vcpu>
<os><type arch='x86_64'>hvm</type><kernel>{guest}/vmlinuz</kernel>
<initrd>{guest}/initrd.img</initrd><cmdline>console=ttyS0 quiet panic=-1</cmdline></os>
<features><acpi/></features><devices>
<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='{seed}'/>
<target dev='hdc' bus='ide'/><readonly/></disk>{nics}
<serial type='pty'><log file='{log}' append='on'/><target port='0'/></serial>
</devices></domain>""")
    virsh("define", str(qemu_dir / "domain.xml"))
    try:
        virsh("start", name)
        lan_net.wait_ping(lan_net.address(2), timeout=90)
        assert lan_net.arp()[lan_net.address(2)] == MACS[0]
        deadline = time.monotonic() + 10
        while "PPEC-GUEST-UP" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        lines = [line.strip() for line in log.read_text().splitlines()
                 if line.startswith("PPEC-")]
        assert lines[:3] == [f"PPEC-NET eth0 {MACS[0]} {lan_net.cidr(2)}",
                             f"PPEC-NET eth1 {MACS[1]} -", "PPEC-GUEST-UP"], lines
        # libvirt's taps carry the guest MACs with the first octet fe, on the LAN's bridge.
        taps = [tap for mac in MACS for tap in taps_with_mac(mac)]
        assert len(taps) == 2 and set(taps) <= set(bridge_ports(lan_net.bridge))
        assert {Path(f"/sys/class/net/{t}/address").read_text().strip()[:3] for t in taps} \
            == {"fe:"}
    finally:
        virsh("destroy", name, check=False)
        virsh("undefine", name, check=False)
