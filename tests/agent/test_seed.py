"""The NoCloud seed ppec writes, checked with Debian's cloud-init 22.4 itself: the
network-config its renderers accept, the cloud-config its schema accepts, and the
user-data parts merged as the guest will merge them (issue 24)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ppec.agent import seed
from ppec.core.errors import BadInput
from ppec.wire.guest import Nic
from tests.cloudinit import (
    cloudinit_reason,
    merged_cloud_config,
    net_convert,
    schema_check,
    user_data_parts,
)

KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBvlSQr7rBMBdx0vmDBqEnuh2mrqHTPyC6UMCGAOV2Bm "
       "ops@laptop")
OPERATOR_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOz9kqm3ZbDa0N3KJ0u8y0Yl2pFv3iTGVtJ0"
                "bgrtnIKx dev@box")
NICS = [(Nic("blue", "02:70:70:0a:1b:2c", "10.0.0.5/24", "10.0.0.1", ("10.0.0.53",)), 9000),
        (Nic("red", "02:70:70:0a:1b:2d"), 0),
        (Nic("v6", "02:70:70:0a:1b:2e", "fd00:1::5/64", "fd00:1::1"), 0)]


@pytest.fixture(autouse=True)
def _cloud_init() -> None:
    reason = cloudinit_reason()
    if reason:
        pytest.skip(f"Debian's cloud-init is not usable here: {reason}")


def test_network_config_is_what_cloud_init_renders(tmp_path: Path) -> None:
    docs = seed.documents("vm1", "6f1c2b1e", NICS)
    doc = json.loads(docs["network-config"])
    assert doc["ethernets"]["nic0"]["routes"] == [{"to": "0.0.0.0/0", "via": "10.0.0.1"}]
    assert doc["ethernets"]["nic1"] == {"match": {"macaddress": "02:70:70:0a:1b:2d"},
                                        "dhcp4": True}
    # Only the primary NIC carries the default route; no rename anywhere.
    assert "routes" not in doc["ethernets"]["nic2"]
    assert not any("set-name" in e for e in doc["ethernets"].values())
    for kind in ("networkd", "eni"):
        rendered = net_convert(docs["network-config"], tmp_path / kind, output_kind=kind)
        for mac in ("02:70:70:0a:1b:2c", "02:70:70:0a:1b:2d", "02:70:70:0a:1b:2e"):
            assert mac in rendered.lower(), (kind, rendered)
        assert "10.0.0.5" in rendered and "10.0.0.1" in rendered and "9000" in rendered


def test_the_old_default_route_is_refused_by_cloud_init(tmp_path: Path) -> None:
    """Why ppec writes 0.0.0.0/0: what it wrote before, `to: default`, fails to render."""
    old = {"version": 2, "ethernets": {"eth0": {"match": {"name": "e*"},
                                                "addresses": ["10.0.0.5/24"],
                                                "routes": [{"to": "default",
                                                            "via": "10.0.0.1"}]}}}
    with pytest.raises(AssertionError, match="not a valid ip address"):
        net_convert(json.dumps(old), tmp_path, output_kind="networkd")


def test_user_data_keeps_the_operators_part_and_ppecs(tmp_path: Path) -> None:
    operator = ("#cloud-config\nhostname: chosen-by-operator\n"
                f"ssh_authorized_keys: [\"{OPERATOR_KEY}\"]\npackages: [htop]\n")
    docs = seed.documents("vm1", "6f1c2b1e", NICS[:1], [KEY], operator)
    parts = user_data_parts(docs["user-data"])
    assert [t for t, _ in parts] == ["text/cloud-config", "text/cloud-config"]
    assert parts[0][1] == operator
    schema_check(parts[1][1], tmp_path / "ours")
    schema_check(operator, tmp_path / "theirs")
    merged = merged_cloud_config(docs["user-data"], tmp_path / "merge")
    # Both parts' keys reach the guest; the operator's own values win where both set one.
    assert merged["ssh_authorized_keys"] == [OPERATOR_KEY, KEY]
    assert merged["packages"] == ["htop"]
    assert merged["hostname"] == "chosen-by-operator"


def test_a_script_is_its_own_part(tmp_path: Path) -> None:
    script = "#!/bin/sh\necho hello > /run/hello\n"
    parts = user_data_parts(seed.documents("vm1", "u", [], [KEY], script)["user-data"])
    assert parts[0] == ("text/x-shellscript", script)
    assert parts[1][0] == "text/cloud-config"
    assert merged_cloud_config(seed.documents("vm1", "u", [], [KEY], script)["user-data"],
                               tmp_path)["ssh_authorized_keys"] == [KEY]


def test_instance_id_follows_the_documents() -> None:
    def iid(*args: object) -> str:
        docs = seed.documents("vm1", "u", *args)  # type: ignore[arg-type]
        return docs["meta-data"].splitlines()[0]
    base = iid(NICS[:1], [KEY], "")
    assert iid(NICS[:1], [KEY], "") == base           # same documents, same id
    assert iid(NICS[:2], [KEY], "") != base           # a NIC more
    assert iid(NICS[:1], [], "") != base              # a key less
    assert iid(NICS[:1], [KEY], "#cloud-config\n{}\n") != base


def test_a_seed_over_the_limit_is_refused() -> None:
    keys = [KEY] * 64
    big = "#cloud-config\n# " + "x" * (seed.MAX_SEED_BYTES - 100) + "\n"
    with pytest.raises(BadInput) as e:
        seed.documents("vm1", "u", NICS, keys, big)
    assert e.value.code == "SEED_TOO_LARGE"
