"""NICs, MACs, SSH keys and user-data through `ppec vm create` against real agents on
libvirt's test driver and real Linux bridges (issue 24). The booting guest that answers
ping at its address is in tests/e2e/test_guest_network.py."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest

from ppec.agent import domxml
from tests.netparts import Lan, lan
from tests.realparts import Agent, Cli, make_key, unique

KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBvlSQr7rBMBdx0vmDBqEnuh2mrqHTPyC6UMCGAOV2Bm "
       "alice@laptop")


@pytest.fixture
def blue(blue_lan: Lan) -> Lan:
    return blue_lan


@pytest.fixture
def fleet(cli: Cli, net_agent: Agent) -> Cli:
    cli.ok("host", "add", "t1", "--address", "local", "--socket", str(net_agent.socket),
           "--vrf", "blue")
    cli.ok("ip", "pool", "add", "blue-1", "--vrf", "blue", "--cidr", "10.93.0.0/24",
           "--gateway", "10.93.0.1", "--dns", "10.93.0.53")
    return cli


def _store(cli: Cli, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(cli.db)) as db:
        return list(db.execute(sql))


def _ledger(agent: Agent, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(agent.ledger)) as db:
        return list(db.execute(sql))


def _xml(cli: Cli, name: str) -> ET.Element:
    return ET.fromstring(cli.ok("vm", "show", name, "--xml").stdout)


def test_a_vm_gets_a_nic_on_its_vrf_with_a_mac_and_the_next_address(
        fleet: Cli, net_agent: Agent, blue: Lan) -> None:
    vm = json.loads(fleet.ok("vm", "create", "g1", "--flavor", "tiny", "-o", "json").stdout)
    [nic] = vm["nics"]
    assert nic["address"] == "10.93.0.2/24" == vm["address"]
    assert (nic["vrf"], nic["network"], nic["bridge"], nic["model"], nic["queues"]) == (
        "blue", "blue", blue.bridge, "virtio", 1)
    assert nic["mac"].startswith("02:70:70:") and len(nic["mac"]) == 17
    assert vm["ip"]["address"] == "10.93.0.2"
    # The live XML (libvirt's), the store and the ledger agree on the MAC.
    [iface] = domxml.interfaces(_xml(fleet, "g1"))
    assert (iface.mac, iface.kind, iface.source, iface.model) == (
        nic["mac"], "bridge", blue.bridge, "virtio")
    assert _store(fleet, "SELECT mac, vm, slot, vrf, address FROM vm_nics") == [
        (nic["mac"], "g1", 0, "blue", "10.93.0.2/24")]
    assert _ledger(net_agent, "SELECT mac, vm FROM vm_nics") == [(nic["mac"], "g1")]
    doc = json.loads(_store(fleet, "SELECT spec FROM vms WHERE name='g1'")[0][0])  # type: ignore[arg-type]
    assert doc["v"] == 1 and doc["nics"][0]["mac"] == nic["mac"]
    ledger_doc = json.loads(_ledger(net_agent, "SELECT spec FROM vms")[0][0])  # type: ignore[arg-type]
    assert ledger_doc == doc
    shown = json.loads(fleet.ok("vm", "show", "g1", "-o", "json").stdout)
    assert shown["nics"] == vm["nics"]
    listed = json.loads(fleet.ok("vm", "list", "-o", "json").stdout)["vms"]
    assert listed[0]["nics"] == vm["nics"]
    table = fleet.ok("vm", "show", "g1").stdout
    assert f"nics       10.93.0.2/24 {nic['mac']} on {blue.bridge} ({nic['target']})" in [
        line.rstrip() for line in table.splitlines()]
    # A second VM: another address, another MAC.
    other = json.loads(fleet.ok("vm", "create", "g2", "--flavor", "tiny", "-o",
                                "json").stdout)["nics"][0]
    assert other["address"] == "10.93.0.3/24" and other["mac"] != nic["mac"]
    # Delete leaves no MAC and no address behind, in the store or the ledger.
    fleet.ok("vm", "delete", "g1")
    fleet.ok("vm", "delete", "g2")
    assert _store(fleet, "SELECT * FROM vm_nics") == []
    assert _store(fleet, "SELECT * FROM ip_addresses") == []
    assert _ledger(net_agent, "SELECT * FROM vm_nics") == []


def test_extra_nics_keys_and_user_data_go_into_the_document(
        fleet: Cli, net_agent: Agent, blue: Lan, tmp_path: Path) -> None:
    with lan("10.94.0.1/24") as red:
        net_agent.kill()
        net_agent.extra["networks"] = {"blue": {"bridge": blue.bridge},
                                       "red": {"bridge": red.bridge, "mtu": 1400}}
        net_agent.start()
        fleet.ok("ip", "pool", "add", "red-1", "--vrf", "red", "--cidr", "10.94.0.0/24")
        pub = tmp_path / "k.pub"
        make_key(tmp_path / "k")
        user_data = tmp_path / "ud.yaml"
        user_data.write_text("#cloud-config\npackages: [htop]\n")
        vm = json.loads(fleet.ok("vm", "create", "m1", "--cpus", "3", "--memory", "256M",
                                 "--disk", "1G", "--nic", "red=10.94.0.9", "--ssh-key",
                                 str(pub), "--user-data", str(user_data), "-o",
                                 "json").stdout)
        assert [(n["vrf"], n["address"], n["bridge"], n["queues"]) for n in vm["nics"]] == [
            ("blue", "10.93.0.2/24", blue.bridge, 3), ("red", "10.94.0.9/24", red.bridge, 3)]
        root = _xml(fleet, "m1")
        assert [i.mac for i in domxml.interfaces(root)] == [n["mac"] for n in vm["nics"]]
        assert root.find("devices/interface[2]/mtu").get("size") == "1400"  # type: ignore[union-attr]
        doc = json.loads(_store(fleet, "SELECT spec FROM vms WHERE name='m1'")[0][0])  # type: ignore[arg-type]
        fingerprint = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True,
                                     text=True, check=True).stdout.split()[1]
        assert doc["ssh_keys"] == [fingerprint]
        assert doc["user_data"].startswith("sha256:")
        fleet.ok("vm", "delete", "m1")
        net_agent.kill()
    assert _store(fleet, "SELECT * FROM vm_nics") == []


def test_forty_concurrent_creates_never_share_a_mac_or_an_address(
        fleet: Cli, net_agent: Agent) -> None:
    names = [f"c{i:02d}" for i in range(40)]

    def create(name: str) -> subprocess.CompletedProcess[str]:
        return fleet.run("vm", "create", name, "--cpus", "1", "--memory", "64M", "--disk",
                         "1M", "--host", "t1", "-o", "json")

    with ThreadPoolExecutor(max_workers=10) as pool:
        done = list(pool.map(create, names))
    assert [d.returncode for d in done] == [0] * 40, [d.stderr for d in done if d.returncode]
    made = {json.loads(d.stdout)["name"]: json.loads(d.stdout)["nics"][0] for d in done}
    macs = {n["mac"] for n in made.values()}
    addresses = {n["address"] for n in made.values()}
    assert len(macs) == 40 and len(addresses) == 40
    live = {}
    for name in names:
        [iface] = domxml.interfaces(_xml(fleet, name))
        live[name] = iface.mac
    assert live == {name: nic["mac"] for name, nic in made.items()}
    store = {vm: (mac, address) for mac, vm, address in
             _store(fleet, "SELECT mac, vm, address FROM vm_nics")}
    assert store == {name: (n["mac"], n["address"]) for name, n in made.items()}
    assert dict(_ledger(net_agent, "SELECT vm, mac FROM vm_nics")) == live
    owners = dict(_store(fleet, "SELECT owner, address FROM ip_addresses"))
    assert {f"{a}/24" for a in owners.values()} == addresses and set(owners) == set(names)


def test_placement_rejects_a_host_without_the_vrfs_network(
        cli: Cli, tmp_path: Path, net_agent: Agent) -> None:
    bare = Agent(tmp_path / "bare", host="t2").start()
    try:
        cli.ok("host", "add", "t1", "--address", "local", "--socket", str(net_agent.socket),
               "--vrf", "blue")
        cli.ok("host", "add", "t2", "--address", "local", "--socket", str(bare.socket),
               "--vrf", "blue")
        cli.ok("ip", "pool", "add", "blue-1", "--vrf", "blue", "--cidr", "10.93.0.0/24")
        doc = json.loads(cli.ok("place", "--flavor", "tiny", "--explain", "--refresh",
                                "-o", "json").stdout)
        verdicts = {h["host"]: h["filters"]["network"] for h in doc["hosts"]}
        assert verdicts == {"t1": None, "t2": "no network for VRF blue"}
        vm = json.loads(cli.ok("vm", "create", "p1", "--flavor", "tiny", "-o", "json").stdout)
        assert vm["host"] == "t1"
        done = cli.run("vm", "create", "p2", "--flavor", "tiny", "--host", "t2")
        assert done.returncode == 3
        assert done.stderr.strip().endswith("t2: no network for VRF blue")
    finally:
        bare.kill()


def test_a_missing_bridge_is_network_missing_and_nothing_is_left(
        cli: Cli, tmp_path: Path, net_agent: Agent) -> None:
    gone = unique("pbgone")[:15]
    agent = Agent(tmp_path / "gone", host="t3",
                  extra={"networks": {"blue": {"bridge": gone}}}).start()
    try:
        cli.ok("host", "add", "t3", "--address", "local", "--socket", str(agent.socket),
               "--vrf", "blue")
        cli.ok("ip", "pool", "add", "blue-1", "--vrf", "blue", "--cidr", "10.93.0.0/24")
        done = cli.run("vm", "create", "n1", "--flavor", "tiny", "-o", "json")
        assert done.returncode == 1 and done.stdout == ""
        err = json.loads(done.stderr)["error"]
        assert err["code"] == "NETWORK_MISSING"
        assert (err["host"], err["message"]) == (
            "t3", f"t3: bridge {gone} (network for VRF blue) does not exist")
        assert cli.store_vms() == []
        assert _store(cli, "SELECT * FROM vm_nics") == []
        assert _store(cli, "SELECT * FROM ip_addresses") == []
        assert agent.ledger_rows() == {} and agent.volumes() == set()
        assert json.loads(cli.ok("vm", "list", "-o", "json").stdout)["vms"] == []
        info = json.loads(cli.ok("host", "show", "t3", "-o", "json").stdout)
        assert info["live"]["networks"] == [{"name": "blue", "kind": "bridge", "source": gone,
                                     "mtu": 0, "present": False, "up": False,
                                     "device_mtu": None}]
    finally:
        agent.kill()


@pytest.mark.parametrize(("args", "line"), [
    (["--ssh-key", "{priv}"], "ppec: error: --ssh-key {priv} is a private key; give the "
                              "public key (its .pub file)"),
    (["--ssh-key", "{junk}"], "ppec: error: --ssh-key {junk}: not an SSH public key: "
                              "'hello world'... (expected a line 'ssh-ed25519 AAAA... "
                              "comment')"),
    (["--ssh-key", "{missing}"], "ppec: error: --ssh-key {missing}: no such file"),
    (["--user-data", "{big}"], "ppec: error: --user-data {big} is 65537 bytes; user-data is "
                               "limited to 64 KiB"),
    (["--user-data", "{latin1}"], "ppec: error: --user-data {latin1} is not UTF-8 text "
                                  "(byte 19)"),
    (["--nic", "green"], "ppec: error: --nic green: VRF 'green' has no IP pool (add one "
                         "with `ppec ip pool add`)"),
    (["--nic", "blue=10.99.0.5"], "ppec: error: --nic blue=10.99.0.5: 10.99.0.5 is in no "
                                  "pool of VRF blue (10.93.0.0/24)"),
    (["--nic", "blue="], "ppec: error: --nic 'blue=': use VRF or VRF=ADDRESS"),
])
def test_bad_guest_input_is_exit_2_and_nothing_is_made(
        fleet: Cli, net_agent: Agent, tmp_path: Path, args: list[str], line: str) -> None:
    make_key(tmp_path / "priv")
    files = {"priv": tmp_path / "priv", "junk": tmp_path / "junk",
             "missing": tmp_path / "missing.pub", "big": tmp_path / "big",
             "latin1": tmp_path / "latin1"}
    files["junk"].write_text("hello world\n")
    files["big"].write_text("#cloud-config\n" + "#" * (65537 - 14))
    files["latin1"].write_bytes("#cloud-config\n# caf\xe9\n".encode("latin-1"))
    names = {k: str(v) for k, v in files.items()}
    done = fleet.run("vm", "create", "b1", "--flavor", "tiny",
                     *[a.format(**names) for a in args])
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.strip() == line.format(**names)
    assert fleet.store_vms() == [] and net_agent.ledger_rows() == {}
    assert _store(fleet, "SELECT * FROM vm_nics") == []
    assert _store(fleet, "SELECT * FROM ip_addresses") == []


def test_config_keys_and_mac_prefix(fleet: Cli, net_agent: Agent, tmp_path: Path) -> None:
    """[guest] ssh_keys join --ssh-key's (once each); [network] mac_prefix is every MAC's
    start; a bad value in either is exit 2 before anything is made."""
    pub = make_key(tmp_path / "k")
    fleet.configure(f'[network]\nmac_prefix = "0A:BC"\n[guest]\nssh_keys = ["{KEY}"]\n')
    vm = json.loads(fleet.ok("vm", "create", "k1", "--flavor", "tiny", "--ssh-key",
                             str(tmp_path / "k.pub"), "-o", "json").stdout)
    assert vm["nics"][0]["mac"].startswith("0a:bc:")
    doc = json.loads(_store(fleet, "SELECT spec FROM vms WHERE name='k1'")[0][0])  # type: ignore[arg-type]
    from ppec.wire.guest import fingerprint
    assert doc["ssh_keys"] == [fingerprint(KEY), fingerprint(pub)]
    for bad, line in [
            ('[network]\nmac_prefix = "01:00"\n',
             f"ppec: error: config {fleet.env['XDG_CONFIG_HOME']}/ppec/config.toml: "
             f"[network] mac_prefix '01:00': the first octet must be unicast and locally "
             f"administered (x2, x6, xa or xe), so no vendor's MAC is taken"),
            ('[guest]\nssh_keys = ["ssh-ed25519 nope"]\n',
             f"ppec: error: config {fleet.env['XDG_CONFIG_HOME']}/ppec/config.toml: "
             f"[guest] ssh_keys[0]: SSH public key (ssh-ed25519): its key data is not "
             f"a ssh-ed25519 key")]:
        fleet.configure(bad)
        done = fleet.run("vm", "create", "k2", "--flavor", "tiny")
        assert (done.returncode, done.stderr.strip()) == (2, line)
    assert fleet.store_vms() == ["k1"]
