"""What a VM's guest is given: its NICs, SSH public keys and user-data (issue 24).

Parts of the one VM document (``ppec.wire.vmspec.VmSpec``), kept apart so that both sides
can check them without loading the VM shape: the method table's checks, the CLI's
``--ssh-key``/``--user-data`` reading and the agent's seed builder use these functions.
Stdlib only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ppec.core.errors import BadInput

MAX_NICS = 8
MAX_SSH_KEYS = 64
MAX_KEY_LENGTH = 16 << 10
# The operator's user-data. NoCloud has no limit of its own; cloud providers cap it
# (EC2 16 KiB, Azure 64 KiB): 64 KiB keeps the seed small and the wire line bounded.
MAX_USER_DATA = 64 << 10
MAX_DNS = 8
MAX_MTU, MIN_MTU = 65535, 68

KEY_TYPES = frozenset({
    "ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com"})
_MAC = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$")
# How user-data may begin (cloud-init's own part types); anything else cloud-init ignores
# or misreads, so it is refused rather than silently lost.
USER_DATA_TYPES = (("#cloud-config", "text/cloud-config"), ("#!", "text/x-shellscript"),
                   ("#cloud-boothook", "text/cloud-boothook"),
                   ("#include", "text/x-include-url"))


def _bad(message: str) -> BadInput:
    return BadInput(message, code="BAD_PARAMS")


@dataclass(frozen=True)
class Nic:
    """One NIC of a VM: on the network its host maps ``vrf`` to, with a MAC ppec chose
    and, when the VRF has a pool, a static address (else the guest asks DHCP)."""

    vrf: str
    mac: str
    address: str = ""             # CIDR, e.g. "10.0.0.5/24"; "" = no static address
    gateway: str = ""             # the default route goes through the first NIC's
    dns: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {"vrf": self.vrf, "mac": self.mac, "address": self.address,
                "gateway": self.gateway, "dns": list(self.dns)}

    @classmethod
    def from_wire(cls, data: Any) -> Nic:
        if not isinstance(data, Mapping):
            raise _bad("a NIC must be {vrf, mac, address, gateway, dns}")
        unknown = sorted(set(data) - {"vrf", "mac", "address", "gateway", "dns"})
        if unknown:
            raise _bad(f"NIC: unknown field(s) {', '.join(unknown)}")
        vrf, mac = data.get("vrf"), data.get("mac")
        address, gateway = data.get("address", ""), data.get("gateway", "")
        dns = data.get("dns", [])
        if not all(isinstance(v, str) for v in (vrf, mac, address, gateway)) \
                or not isinstance(dns, list) or not all(isinstance(d, str) for d in dns):
            raise _bad("a NIC must be {vrf, mac, address, gateway, dns} of strings")
        assert isinstance(vrf, str) and isinstance(mac, str)
        assert isinstance(address, str) and isinstance(gateway, str)
        if not vrf or len(vrf) > 63 or not vrf.isprintable():
            raise _bad(f"NIC: invalid VRF {vrf!r}")
        check_mac(mac)
        if len(dns) > MAX_DNS:
            raise _bad(f"NIC {mac}: more than {MAX_DNS} DNS servers")
        try:
            iface = ipaddress.ip_interface(address) if address else None
            gw = ipaddress.ip_address(gateway) if gateway else None
            servers = tuple(str(ipaddress.ip_address(d)) for d in dns)
        except ValueError as e:
            raise _bad(f"NIC {mac}: {e}") from None
        if gw is not None and (iface is None or gw not in iface.network):
            raise _bad(f"NIC {mac}: gateway {gw} is outside "
                       f"{iface.network if iface else 'its (missing) address'}")
        return cls(vrf, mac, str(iface) if iface else "", str(gw) if gw else "", servers)


def check_mac(mac: str) -> str:
    """A unicast, locally administered MAC in lower case (what ppec hands out)."""
    if not _MAC.fullmatch(mac):
        raise _bad(f"invalid MAC {mac!r}: six lower-case hex octets joined by ':'")
    first = int(mac[:2], 16)
    if first & 1 or not first & 2:
        raise _bad(f"MAC {mac} must be unicast and locally administered "
                   f"(first octet x2, x6, xa or xe)")
    return mac


def check_mac_prefix(prefix: str) -> str:
    """``[network] mac_prefix``: 1-5 octets whose first is unicast, locally administered."""
    octets = prefix.lower().split(":")
    if not 1 <= len(octets) <= 5 or not all(re.fullmatch(r"[0-9a-f]{2}", o) for o in octets):
        raise BadInput(f"mac_prefix {prefix!r}: give 1 to 5 hex octets, e.g. 02:70:70")
    first = int(octets[0], 16)
    if first & 1 or not first & 2:
        raise BadInput(f"mac_prefix {prefix!r}: the first octet must be unicast and locally "
                       f"administered (x2, x6, xa or xe), so no vendor's MAC is taken")
    return ":".join(octets)


def nics_from_wire(value: Any) -> tuple[Nic, ...]:
    if not isinstance(value, list) or len(value) > MAX_NICS:
        raise _bad(f"nics must be a list of at most {MAX_NICS} NICs")
    nics = tuple(Nic.from_wire(n) for n in value)
    macs = [n.mac for n in nics]
    if len(set(macs)) != len(macs):
        raise _bad("two NICs share a MAC")
    return nics


# -- SSH public keys -----------------------------------------------------------------------


def key_blob(line: str) -> tuple[str, bytes]:
    """(type, decoded blob) of one OpenSSH public key line, or BAD_PARAMS saying why."""
    parts = line.split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise _bad(f"not an SSH public key: {line[:40]!r}... (expected a line "
                   f"'ssh-ed25519 AAAA... comment')")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"SSH public key ({parts[0]}): its key data is not base64") from None
    name = parts[0].encode()
    # The blob starts with its own type, length-prefixed: a pasted fragment fails here.
    if blob[:4] != len(name).to_bytes(4, "big") or blob[4:4 + len(name)] != name:
        raise _bad(f"SSH public key ({parts[0]}): its key data is not a {parts[0]} key")
    return parts[0], blob


def fingerprint(line: str) -> str:
    """``SHA256:…`` as ``ssh-keygen -l`` prints it."""
    _, blob = key_blob(line)
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def check_ssh_keys(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_SSH_KEYS \
            or not all(isinstance(k, str) for k in value):
        raise _bad(f"ssh_keys must be a list of at most {MAX_SSH_KEYS} public key lines")
    for line in value:
        if len(line) > MAX_KEY_LENGTH or "\n" in line.strip() or not line.isprintable():
            raise _bad("an SSH public key is one printable line")
        key_blob(line)
    return tuple(line.strip() for line in value)


def read_public_keys(text: str, source: str) -> list[str]:
    """The keys of a public key file (``--ssh-key``): one or more lines, comments and
    blank lines skipped. A private key, or a file with no key, is refused by name."""
    if "PRIVATE KEY-----" in text:
        raise BadInput(f"{source} is a private key; give the public key (its .pub file)")
    keys = [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise BadInput(f"{source} holds no SSH public key")
    try:
        for line in keys:
            key_blob(line)
    except BadInput as e:
        raise BadInput(f"{source}: {e.message}") from None
    return keys


# -- user-data -----------------------------------------------------------------------------


def user_data_type(text: str) -> str:
    """The MIME type cloud-init gives this user-data, or BAD_INPUT saying what it takes."""
    for prefix, mime in USER_DATA_TYPES:
        if text.startswith(prefix):
            return mime
    raise BadInput("user-data must start with #cloud-config, #! (a script), "
                   "#cloud-boothook or #include", code="BAD_PARAMS")


def check_user_data(value: Any) -> str:
    if not isinstance(value, str):
        raise _bad("user_data must be text")
    if len(value.encode()) > MAX_USER_DATA:
        raise _bad(f"user-data is {len(value.encode())} bytes, more than the "
                   f"{MAX_USER_DATA >> 10} KiB limit")
    if value:
        user_data_type(value)
    return value


def read_user_data(data: bytes, source: str) -> str:
    """``--user-data FILE``'s bytes as the text the seed carries."""
    if len(data) > MAX_USER_DATA:
        raise BadInput(f"{source} is {len(data)} bytes; user-data is limited to "
                       f"{MAX_USER_DATA >> 10} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"{source} is not UTF-8 text (byte {e.start})") from None
    if not text.strip():
        raise BadInput(f"{source} is empty")
    try:
        user_data_type(text)
    except BadInput as e:
        raise BadInput(f"{source}: {e.message}") from None
    return text


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def document(nics: Sequence[Nic], ssh_keys: Sequence[str], user_data: str
             ) -> dict[str, Any]:
    """The guest part of the stored VM document: NICs whole, keys by fingerprint,
    user-data by digest (the seed on the host has them whole)."""
    return {"nics": [n.to_wire() for n in nics],
            "ssh_keys": [fingerprint(k) for k in ssh_keys],
            "user_data": digest(user_data) if user_data else ""}
