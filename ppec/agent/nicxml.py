"""A domain's ``<interface>`` elements: built from a VM's NIC resolved to the host's
network, and read back (drift, views). Beside ``domxml``, which re-exports these."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass


def _sub(parent: ET.Element, tag: str, **attrs: str) -> ET.Element:
    return ET.SubElement(parent, tag, attrs)


@dataclass(frozen=True)
class Interface:
    """One NIC as the domain has it: the VM's NIC resolved to this host's network."""

    mac: str
    vrf: str
    kind: str               # bridge | macvtap
    source: str             # the bridge, or the device macvtap sits on
    address: str = ""       # recorded in the metadata
    mtu: int = 0
    queues: int = 1
    driver: str = "vhost"   # vhost (in-kernel datapath) | qemu (where /dev/vhost-net lacks)


@dataclass(frozen=True)
class InterfaceInfo:
    """One ``<interface>`` of a domain's XML, as drift and the views read it."""

    mac: str
    kind: str               # bridge | macvtap | libvirt's type for anything else
    source: str
    model: str
    queues: int
    target: str             # live XML only: the tap or macvtap device


def interface_element(nic: Interface) -> ET.Element:
    """virtio, with vhost where the host has it, and one queue pair per vCPU (up to 8)."""
    if nic.kind == "macvtap":
        el = ET.Element("interface", type="direct")
        _sub(el, "mac", address=nic.mac)
        _sub(el, "source", dev=nic.source, mode="bridge")
    else:
        el = ET.Element("interface", type="bridge")
        _sub(el, "mac", address=nic.mac)
        _sub(el, "source", bridge=nic.source)
    _sub(el, "model", type="virtio")
    driver = _sub(el, "driver", name=nic.driver)
    if nic.queues > 1:
        driver.set("queues", str(nic.queues))
    if nic.mtu:
        _sub(el, "mtu", size=str(nic.mtu))
    return el


def interfaces(root: ET.Element) -> list[InterfaceInfo]:
    out = []
    for el in root.findall("devices/interface"):
        src = el.find("source")
        source = "" if src is None else (src.get("bridge") or src.get("dev")
                                          or src.get("network") or "")
        kind = {"bridge": "bridge", "direct": "macvtap"}.get(el.get("type", ""),
                                                             el.get("type", ""))
        mac, model = el.find("mac"), el.find("model")
        driver, target = el.find("driver"), el.find("target")
        out.append(InterfaceInfo(
            mac=(mac.get("address", "") if mac is not None else "").lower(), kind=kind,
            source=source, model=model.get("type", "") if model is not None else "",
            queues=int(driver.get("queues", "1")) if driver is not None else 1,
            target=target.get("dev", "") if target is not None else ""))
    return out
