"""The cloud-init NoCloud seed every VM gets, as a small ISO (volume label ``cidata``).

- ``network-config``: version 2, one entry per NIC matched by its MAC (no rename: the
  guest keeps its own names, ``ens2`` or ``eth0``), its static address, the default route
  through the primary NIC's gateway as ``0.0.0.0/0`` (cloud-init 22.4, Debian 12's, refuses
  ``to: default``), DNS; a NIC without an address asks DHCP.
- ``user-data``: MIME multi-part, the operator's part (if any) first, then ppec's
  cloud-config (hostname, SSH keys) with a ``merge_how`` that appends lists and keeps the
  operator's other values, so neither is lost.
- ``meta-data``: an ``instance-id`` that changes when the documents do, so cloud-init
  applies a changed seed again.

JSON is YAML: cloud-init reads it, and nothing here needs a YAML library. The tests check
what this writes with Debian's cloud-init itself.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import subprocess
import tempfile
from collections.abc import Sequence
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any

from ppec.core.errors import BadInput, StorageError
from ppec.wire.guest import Nic, user_data_type

# The documents together (user-data is limited on its own; keys add up).
MAX_SEED_BYTES = 512 << 10
# Merge ppec's part into the operator's: lists appended (both parts' SSH keys), the
# operator's scalar values kept where both set one.
MERGE_HOW = [{"name": "list", "settings": ["append"]},
             {"name": "dict", "settings": ["no_replace", "recurse_list"]}]


def network_config(nics: Sequence[tuple[Nic, int]]) -> str:
    """``nics``: each NIC with the MTU of its network on this host (0: the device's)."""
    ethernets: dict[str, Any] = {}
    for i, (nic, mtu) in enumerate(nics):
        eth: dict[str, Any] = {"match": {"macaddress": nic.mac}}
        if mtu:
            eth["mtu"] = mtu
        if nic.address:
            eth["addresses"] = [nic.address]
            if nic.gateway and i == 0:
                anywhere = "0.0.0.0/0" if ipaddress.ip_address(nic.gateway).version == 4 \
                    else "::/0"
                eth["routes"] = [{"to": anywhere, "via": nic.gateway}]
            if nic.dns:
                eth["nameservers"] = {"addresses": list(nic.dns)}
        else:
            eth["dhcp4"] = True
        ethernets[f"nic{i}"] = eth
    return json.dumps({"version": 2, "ethernets": ethernets}, indent=1) + "\n"


def ppec_cloud_config(hostname: str, ssh_keys: Sequence[str]) -> str:
    lines = ["#cloud-config", f"hostname: {json.dumps(hostname)}"]
    if ssh_keys:
        lines.append(f"ssh_authorized_keys: {json.dumps(list(ssh_keys))}")
    lines.append(f"merge_how: {json.dumps(MERGE_HOW)}")
    return "\n".join(lines) + "\n"


def user_data(hostname: str, ssh_keys: Sequence[str], operator: str) -> str:
    outer = MIMEMultipart()
    if operator:
        _, subtype = user_data_type(operator).split("/", 1)
        outer.attach(MIMEText(operator, subtype, "utf-8"))
    outer.attach(MIMEText(ppec_cloud_config(hostname, ssh_keys), "cloud-config", "utf-8"))
    return outer.as_string() + "\n"


def documents(hostname: str, uuid: str, nics: Sequence[tuple[Nic, int]],
              ssh_keys: Sequence[str] = (), operator_user_data: str = "") -> dict[str, str]:
    docs = {"user-data": user_data(hostname, ssh_keys, operator_user_data)}
    if nics:
        docs["network-config"] = network_config(nics)
    # The MIME boundary is random: the digest is over what the guest acts on.
    digest = hashlib.sha256(json.dumps(
        [hostname, [(n.to_wire(), m) for n, m in nics], list(ssh_keys), operator_user_data]
    ).encode()).hexdigest()[:16]
    docs["meta-data"] = (f"instance-id: {json.dumps(f'{uuid}-{digest}')}\n"
                         f"local-hostname: {json.dumps(hostname)}\n")
    size = sum(len(t.encode()) for t in docs.values())
    if size > MAX_SEED_BYTES:
        raise BadInput(f"the cloud-init seed would be {size} bytes, more than "
                       f"{MAX_SEED_BYTES >> 10} KiB (fewer keys or shorter user-data)",
                       code="SEED_TOO_LARGE")
    return docs


def build(path: Path, docs: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for name, text in docs.items():
            (Path(tmp) / name).write_text(text)
            files.append(str(Path(tmp) / name))
        try:
            done = subprocess.run(["genisoimage", "-quiet", "-output", str(path), "-volid",
                                   "cidata", "-joliet", "-rock", *files],
                                  capture_output=True, text=True, timeout=60, check=False)
        except FileNotFoundError:
            raise StorageError("genisoimage is not installed on this host") from None
        except subprocess.TimeoutExpired:
            raise StorageError("genisoimage did not finish within 60 s") from None
    if done.returncode != 0:
        raise StorageError(f"building the seed ISO failed: {done.stderr.strip()}")
    path.chmod(0o644)
