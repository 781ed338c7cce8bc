"""A cloud-init NoCloud seed: hostname, static address, gateway, DNS, as a small ISO.

The guest's cloud-init finds it by its volume label ``cidata`` on the CD-ROM ppec attaches.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ppec.core.errors import BadInput, StorageError


def check_network(net: dict[str, Any]) -> dict[str, Any]:
    """``{"address": "10.0.0.5/24", "gateway": "10.0.0.1", "dns": [...]}``, validated."""
    unknown = set(net) - {"address", "gateway", "dns"}
    if unknown:
        raise BadInput(f"network: unknown field(s) {', '.join(sorted(unknown))}")
    try:
        iface = ipaddress.ip_interface(str(net["address"]))
        gateway = ipaddress.ip_address(str(net["gateway"])) if net.get("gateway") else None
        dns = [str(ipaddress.ip_address(str(d))) for d in net.get("dns", [])]
    except (KeyError, ValueError) as e:
        raise BadInput(f"network: {e}") from None
    if gateway is not None and gateway not in iface.network:
        raise BadInput(f"network: gateway {gateway} is outside {iface.network}")
    return {"address": str(iface), "gateway": str(gateway or ""), "dns": dns}


def documents(hostname: str, instance_id: str, net: dict[str, Any]) -> dict[str, str]:
    meta = f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n"
    eth: dict[str, Any] = {"match": {"name": "e*"}, "addresses": [net["address"]]}
    if net["gateway"]:
        eth["routes"] = [{"to": "default", "via": net["gateway"]}]
    if net["dns"]:
        eth["nameservers"] = {"addresses": net["dns"]}
    # JSON is YAML: cloud-init reads it, and nothing here needs a YAML library.
    network = json.dumps({"version": 2, "ethernets": {"eth0": eth}}, indent=1) + "\n"
    user = f"#cloud-config\nhostname: {hostname}\n"
    return {"meta-data": meta, "network-config": network, "user-data": user}


def build(path: Path, hostname: str, instance_id: str, net: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for name, text in documents(hostname, instance_id, net).items():
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
