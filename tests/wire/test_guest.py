"""The guest parts of the VM document: NICs, MACs, SSH public keys, user-data, and their
checks on the wire (the method table refuses what the agent must never build)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppec.core.errors import BadInput
from ppec.wire import guest
from ppec.wire.methods import METHODS, check_params
from ppec.wire.vmspec import Shape, VmSpec
from tests.realparts import make_key

NIC = {"vrf": "blue", "mac": "02:70:70:0a:1b:2c", "address": "10.0.0.5/24",
       "gateway": "10.0.0.1", "dns": ["10.0.0.53"]}


def test_fingerprints_are_ssh_keygens(tmp_path: Path) -> None:
    pub = make_key(tmp_path / "k")
    want = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], capture_output=True,
                          text=True, check=True).stdout.split()[1]
    assert guest.fingerprint(pub) == want


@pytest.mark.parametrize(("mac", "ok"), [
    ("02:70:70:0a:1b:2c", True), ("0a:00:00:00:00:01", True),
    ("52:54:00:0a:1b:2c", True),       # QEMU's own prefix is locally administered too
    ("00:16:3e:0a:1b:2c", False),      # a vendor's OUI: globally administered
    ("03:70:70:0a:1b:2c", False),      # multicast
    ("02:70:70:0A:1B:2C", False),      # upper case: ppec writes and compares lower case
    ("02:70:70:0a:1b", False), ("02-70-70-0a-1b-2c", False)])
def test_macs(mac: str, ok: bool) -> None:
    if ok:
        assert guest.check_mac(mac) == mac
    else:
        with pytest.raises(BadInput):
            guest.check_mac(mac)


@pytest.mark.parametrize(("prefix", "ok"), [
    ("02:70:70", True), ("0E", True), ("02:00:00:00:01", True), ("00:16:3e", False),
    ("02:70:70:00:00:00", False), ("", False), ("02:7", False)])
def test_mac_prefixes(prefix: str, ok: bool) -> None:
    if ok:
        assert guest.check_mac_prefix(prefix) == prefix.lower()
    else:
        with pytest.raises(BadInput):
            guest.check_mac_prefix(prefix)


@pytest.mark.parametrize(("change", "words"), [
    ({"mac": "00:16:3e:00:00:01"}, "locally administered"),
    ({"address": "10.0.0.5", "gateway": ""}, None),         # a /32 is an address too
    ({"address": "10.0.0.300/24"}, "does not appear to be an IPv4 or IPv6 interface"),
    ({"gateway": "10.9.9.1"}, "gateway 10.9.9.1 is outside 10.0.0.0/24"),
    ({"address": "", "gateway": "10.0.0.1"}, "outside its (missing) address"),
    ({"dns": ["x"]}, "does not appear to be an IPv4 or IPv6 address"),
    ({"vrf": ""}, "invalid VRF"),
    ({"bridge": "br0"}, "unknown field(s) bridge"),
])
def test_a_bad_nic_is_refused_on_the_wire(change: dict[str, object], words: str | None
                                          ) -> None:
    params = {"name": "a", "vcpus": 1, "memory_mib": 64, "disk_bytes": 1 << 20,
              "nics": [{**NIC, **change}]}
    if words is None:
        check_params(METHODS["vm.create"], params)
        return
    with pytest.raises(BadInput) as e:
        check_params(METHODS["vm.create"], params)
    assert e.value.code == "BAD_PARAMS" and words in e.value.message


def test_two_nics_with_one_mac_are_refused() -> None:
    with pytest.raises(BadInput, match="two NICs share a MAC"):
        guest.nics_from_wire([NIC, {**NIC, "vrf": "red"}])


@pytest.mark.parametrize(("text", "words"), [
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----\n",
     "is a private key"),
    ("ssh-ed25519 not-base64!\n", "not base64"),
    ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIBvlSQr7rBMBdx0vmDBqEnuh2mrqHTPyC6UMCGAOV2Bm\n",
     "is not a ssh-rsa key"),
    ("# only a comment\n\n", "holds no SSH public key"),
])
def test_key_files_that_are_not_public_keys(text: str, words: str) -> None:
    with pytest.raises(BadInput) as e:
        guest.read_public_keys(text, "k.pub")
    assert words in e.value.message


@pytest.mark.parametrize(("data", "words"), [
    (b"\xff\xfe#cloud-config\n", "not UTF-8"),
    (b"packages: [htop]\n", "must start with #cloud-config"),
    (b"   \n", "is empty"),
    (b"#cloud-config\n" + b"#" * guest.MAX_USER_DATA, "limited to 64 KiB"),
])
def test_user_data_that_is_refused(data: bytes, words: str) -> None:
    with pytest.raises(BadInput) as e:
        guest.read_user_data(data, "ud")
    assert words in e.value.message


@given(st.lists(st.tuples(st.sampled_from(["blue", "red", "green"]),
                          st.binary(min_size=3, max_size=3)), max_size=8, unique_by=lambda t: t[1]),
       st.booleans())
def test_the_document_round_trips_through_the_wire(nics: list[tuple[str, bytes]],
                                                   with_data: bool) -> None:
    spec = VmSpec("vm-1", Shape(2, 512, 1 << 30),
                  nics=tuple(guest.Nic(v, "02:70:70:" + b.hex(":"), "") for v, b in nics),
                  user_data="#cloud-config\n{}\n" if with_data else "")
    assert VmSpec.from_params(check_params(METHODS["vm.create"], spec.to_params())) == spec
    doc = spec.document()
    assert doc["v"] == 1 and doc["nics"] == [n.to_wire() for n in spec.nics]
    assert doc["user_data"] == (guest.digest(spec.user_data) if with_data else "")
    assert "ssh_keys" in doc and doc["ssh_keys"] == []
