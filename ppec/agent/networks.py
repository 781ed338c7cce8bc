"""The host's networks (``[networks.VRF]``): what they are now, and a VM's NICs on them.

The agent never makes bridges or uplinks: they are the host's (its network config), and a
configured one that is missing or down is reported, and a create that needs it refused with
``NETWORK_MISSING`` before anything is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ppec.agent.config import AgentConfig, Network
from ppec.agent.domxml import Interface
from ppec.core.errors import PpecError
from ppec.wire.guest import Nic

SYS_NET = Path("/sys/class/net")
VHOST_NET = Path("/dev/vhost-net")
MAX_QUEUES = 8


class NetworkMissing(PpecError):
    code = "NETWORK_MISSING"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def state(net: Network, sys_net: Path = SYS_NET) -> dict[str, Any]:
    """A configured network as the host has it now (host.info, snapshots, host show)."""
    dev = sys_net / net.source
    present = dev.exists() and (net.kind != "bridge" or (dev / "bridge").is_dir())
    operstate = _read(dev / "operstate")
    flags = _read(dev / "flags")
    # A bridge without ports reports operstate "down" though it is up: IFF_UP says.
    up = present and (operstate == "up" or (flags.startswith("0x") and int(flags, 16) & 1 == 1))
    mtu = _read(dev / "mtu")
    return {**net.as_dict(), "present": present, "up": up,
            "device_mtu": int(mtu) if mtu.isdigit() else None}


def states(config: AgentConfig) -> list[dict[str, Any]]:
    return [state(n) for n in config.networks]


def vhost_available() -> bool:
    return VHOST_NET.exists()


def resolve(config: AgentConfig, host: str, nics: Sequence[Nic], vcpus: int,
            domain_type: str) -> tuple[Interface, ...]:
    """Each NIC on its VRF's network here, or NETWORK_MISSING naming what lacks."""
    out = []
    vhost = vhost_available() and domain_type == "kvm"
    for nic in nics:
        net = config.network(nic.vrf)
        if net is None:
            raise NetworkMissing(f"no network for VRF {nic.vrf} (add [networks.{nic.vrf}] "
                                 f"to the agent config)", details={"vrf": nic.vrf}, host=host)
        now = state(net)
        if not now["present"]:
            raise NetworkMissing(f"{net.kind} {net.source} (network for VRF {nic.vrf}) does "
                                 f"not exist", host=host,
                                 details={"vrf": nic.vrf, "kind": net.kind,
                                          "device": net.source})
        out.append(Interface(mac=nic.mac, vrf=nic.vrf, kind=net.kind, source=net.source,
                             address=nic.address, mtu=net.mtu,
                             queues=min(vcpus, MAX_QUEUES),
                             driver="vhost" if vhost else "qemu"))
    return tuple(out)
