"""Libvirt domain XML: one small builder per subtree, parsed back with ElementTree.

Never string concatenation: names and paths go through ElementTree's escaping.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

NS = "https://ppec.dev/xmlns/vm/1"
ET.register_namespace("ppec", NS)


@dataclass(frozen=True)
class DomainSpec:
    name: str
    uuid: str
    domain_type: str
    arch: str
    vcpus: int
    memory_mib: int
    disk_path: str
    host: str
    created: str
    emulator: str = ""


@dataclass(frozen=True)
class Ownership:
    """What ppec wrote into a domain's ``<metadata>``: proof that ppec built it."""

    host: str
    created: str


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def metadata_element(spec: DomainSpec) -> ET.Element:
    vm = ET.Element(f"{{{NS}}}vm")
    _sub(vm, f"{{{NS}}}host", spec.host)
    _sub(vm, f"{{{NS}}}created", spec.created)
    return vm


def os_element(spec: DomainSpec) -> ET.Element:
    os_el = ET.Element("os")
    _sub(os_el, "type", "hvm", arch=spec.arch)
    _sub(os_el, "boot", dev="hd")
    return os_el


def disk_element(path: str, target: str, fmt: str = "qcow2", bus: str = "virtio") -> ET.Element:
    disk = ET.Element("disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type=fmt)
    _sub(disk, "source", file=path)
    _sub(disk, "target", dev=target, bus=bus)
    return disk


def console_elements() -> list[ET.Element]:
    serial = ET.Element("serial", type="pty")
    _sub(serial, "target", port="0")
    console = ET.Element("console", type="pty")
    _sub(console, "target", type="serial", port="0")
    return [serial, console]


def build_domain(spec: DomainSpec) -> str:
    dom = ET.Element("domain", type=spec.domain_type)
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", spec.uuid)
    _sub(dom, "metadata").append(metadata_element(spec))
    _sub(dom, "memory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus), placement="static")
    dom.append(os_element(spec))
    # ACPI lets a guest take a graceful shutdown and disk hot-plug requests.
    _sub(_sub(dom, "features"), "acpi")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    if spec.emulator:
        _sub(devices, "emulator", spec.emulator)
    devices.append(disk_element(spec.disk_path, "vda"))
    devices.extend(console_elements())
    _sub(devices, "memballoon", model="none")
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")


def ownership(root: ET.Element) -> Ownership | None:
    vm = root.find(f"metadata/{{{NS}}}vm")
    if vm is None:
        return None
    return Ownership(host=vm.findtext(f"{{{NS}}}host", ""),
                     created=vm.findtext(f"{{{NS}}}created", ""))


def disk_paths(root: ET.Element) -> list[str]:
    return [src.get("file") or src.get("dev") or ""
            for src in root.findall("devices/disk/source")]


def vcpu_count(root: ET.Element) -> int:
    return int(root.findtext("vcpu", "0"))
