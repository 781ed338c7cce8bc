"""A migrating VM's domain XML as the target host will run it (parse, edit, serialize).

The source's migratable XML is the starting point, not a fresh build: the guest's ABI
(device addresses, the CPU model, the guest NUMA topology, hot-plugged disks) must stay
exactly as the running guest has it, or libvirt refuses the migration. Only what belongs
to the host is replaced, as Nova's ``_update_numa_xml`` does: the CPU pins and
``numatune`` of the target's own fit (copying the source's pins verbatim double-books
CPUs there: Nova bug 1289064), the paths of the disks the target prepared, each NIC's
bridge or device on the target, the console log, the owner in ppec's metadata.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass

from ppec.agent import domxml
from ppec.agent.nicxml import Interface
from ppec.agent.tuning import DiskTuning, has_iothread
from ppec.core.errors import BadInput, NoCapacity
from ppec.numa import Plan
from ppec.numa.topology import format_cpulist


@dataclass(frozen=True)
class Target:
    """What the target host puts into the VM's domain."""

    host: str
    plan: Plan
    disks: Mapping[str, str]              # target dev (vda, hdc, vdb...) -> path here
    interfaces: Mapping[str, Interface]   # MAC -> the NIC on this host's network
    console_log: str
    emulator: str = ""                    # "": keep the source's
    disk: DiskTuning | None = None        # this host's cache/io for file disks; None: keep


def check_layout(root: ET.Element, plan: Plan) -> None:
    """The target's fit must give the guest the cells it runs with (a live guest cannot
    change its NUMA topology), else NO_CAPACITY saying so."""
    if plan.policy != "dedicated":
        return
    have = domxml.guest_cells(root)
    got = [(c.id, frozenset(c.vcpus), c.memory_mib) for c in plan.cells]
    if sorted(have) != sorted(got):
        def show(cells: list[tuple[int, frozenset[int], int]]) -> str:
            return ", ".join(f"cell {i}: vCPUs {format_cpulist(v)}, {m} MiB"
                             for i, v, m in sorted(cells)) or "none"
        raise NoCapacity(f"the guest runs with NUMA cells [{show(have)}]; this host can "
                         f"only give it [{show(got)}]", code="NUMA_LAYOUT")


def destination(source_xml: str, target: Target) -> str:
    """The target's domain XML for ``source_xml`` (a migratable XML)."""
    root = ET.fromstring(source_xml)
    check_layout(root, target.plan)
    _owner(root, target.host)
    _pins(root, target.plan)
    _disks(root, target.disks, target.disk)
    _interfaces(root, target.interfaces)
    for log in root.findall("devices/serial/log") + root.findall("devices/console/log"):
        log.set("file", target.console_log)
    if target.emulator:
        emulator = root.find("devices/emulator")
        if emulator is not None:
            emulator.text = target.emulator
    return ET.tostring(root, encoding="unicode")


def _owner(root: ET.Element, host: str) -> None:
    owner = root.find(f"metadata/{{{domxml.NS}}}vm/{{{domxml.NS}}}host")
    if owner is None:
        raise BadInput("the domain has no ppec metadata: not a VM ppec built",
                       code="NOT_OWNED")
    owner.text = host


def _replace(root: ET.Element, tag: str, new: ET.Element | None, after: str) -> None:
    """``new`` in place of ``root``'s ``tag`` (or after ``after`` when it has none);
    None removes it."""
    old = root.find(tag)
    children = list(root)
    if old is not None:
        at = children.index(old)
        root.remove(old)
    else:
        anchor = root.find(after)
        at = children.index(anchor) + 1 if anchor is not None else len(children)
    if new is not None:
        root.insert(at, new)


def _pins(root: ET.Element, plan: Plan) -> None:
    vcpu = root.find("vcpu")
    if plan.policy == "dedicated":
        if vcpu is not None:
            vcpu.attrib.pop("cpuset", None)
        _replace(root, "cputune", domxml.cputune_element(plan, has_iothread(root)), "vcpu")
        _replace(root, "numatune", domxml.numatune_element(plan), "cputune")
        return
    # Shared: the source's pins are its floating pool there; here the pool is another.
    _replace(root, "cputune", None, "vcpu")
    _replace(root, "numatune", None, "vcpu")
    if vcpu is not None:
        if plan.float_cpus:
            vcpu.set("cpuset", format_cpulist(plan.float_cpus))
        else:
            vcpu.attrib.pop("cpuset", None)


def _disks(root: ET.Element, paths: Mapping[str, str], tune: DiskTuning | None) -> None:
    for disk in root.findall("devices/disk"):
        driver = disk.find("driver")
        if tune is not None and driver is not None and disk.get("device") == "disk" \
                and driver.get("cache"):   # what the target's storage allows (O_DIRECT)
            tune.driver(driver, iothread=False)
        target = disk.find("target")
        source = disk.find("source")
        dev = target.get("dev", "") if target is not None else ""
        if source is None or source.get("file") is None:
            continue
        if dev not in paths:
            raise BadInput(f"disk {dev} ({source.get('file')}) is not one ppec made on "
                           f"the source; detach it before migrating", code="DISK_UNKNOWN")
        source.set("file", paths[dev])


def _interfaces(root: ET.Element, by_mac: Mapping[str, Interface]) -> None:
    for iface in root.findall("devices/interface"):
        mac_el = iface.find("mac")
        mac = mac_el.get("address", "") if mac_el is not None else ""
        nic = by_mac.get(mac)
        if nic is None:
            raise BadInput(f"NIC {mac} is not one ppec gave the VM; remove it before "
                           f"migrating", code="NIC_UNKNOWN")
        source = iface.find("source")
        if source is None:
            source = ET.SubElement(iface, "source")
        source.attrib.clear()
        if nic.kind == "macvtap":
            iface.set("type", "direct")
            source.set("dev", nic.source)
            source.set("mode", "bridge")
        else:
            iface.set("type", "bridge")
            source.set("bridge", nic.source)
        tap = iface.find("target")   # the tap's name is the source host's
        if tap is not None:
            iface.remove(tap)
