"""Drift: what changed on the host that this agent did not do.

Each kind has a stable code. The ledger says what the agent built and last set; libvirt
says what is; every difference is an alert. Unknown domains are reported, never touched.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from ppec.agent import domxml
from ppec.numa.topology import format_cpulist

FOREIGN_DOMAIN = "FOREIGN_DOMAIN"      # a domain ppec (this host's agent) did not create
DOMAIN_MISSING = "DOMAIN_MISSING"      # a ppec VM libvirt no longer has
POWER_MISMATCH = "POWER_MISMATCH"      # running/shut off, not as ppec last set it
PINNING_CHANGED = "PINNING_CHANGED"    # vCPU/emulator pins or memory binding moved
DISK_ADDED = "DISK_ADDED"
DISK_REMOVED = "DISK_REMOVED"
MEMORY_CHANGED = "MEMORY_CHANGED"
MEMORY_BACKING_CHANGED = "MEMORY_BACKING_CHANGED"   # huge pages added, removed or resized
VCPUS_CHANGED = "VCPUS_CHANGED"
NIC_ADDED = "NIC_ADDED"                # an interface ppec did not give the VM
NIC_REMOVED = "NIC_REMOVED"            # a NIC ppec gave it is gone
NIC_CHANGED = "NIC_CHANGED"            # a NIC of ppec's moved to another bridge or device
# Base images under image_dir/by-digest (ppec.agent.verify.ImageWatch, issue 25):
IMAGE_CHANGED = "IMAGE_CHANGED"        # no longer hashes to its name: every overlay on it is bad
IMAGE_MISSING = "IMAGE_MISSING"        # a VM in the ledger uses it; by-digest lacks it


@dataclass(frozen=True)
class Alert:
    code: str
    object: str
    detail: str


def _memory(root: ET.Element) -> set[int]:
    """Maximum and current memory (MiB) as the XML states them."""
    out = set()
    for tag in ("memory", "currentMemory"):
        el = root.find(tag)
        if el is not None and el.text:
            unit = el.get("unit", "KiB")
            value = int(el.text)
            out.add(value // 1024 if unit in ("KiB", "k", "K") else value)
    return out


def compare_vm(name: str, vcpus: int, memory_mib: int, power: str, active: bool,
               expected_disks: dict[str, set[str]], optional_disks: set[str],
               live: ET.Element, config: ET.Element,
               held: tuple[frozenset[int], tuple[tuple[int, int], ...]] | None,
               live_held: tuple[frozenset[int], tuple[tuple[int, int], ...]] | None
               ) -> list[Alert]:
    """Every difference between what ppec built and set, and one VM's live and saved XML.

    ``expected_disks`` maps "live" and "config" to the paths ppec put there (a disk whose
    detach is pending is live only); ``optional_disks`` may be present or not (the seed ISO,
    a disk mid-attach)."""
    alerts = []
    state = "running" if active else "shut-off"
    if state != power:
        alerts.append(Alert(POWER_MISMATCH, name, f"ppec last set {power}, libvirt has "
                                                  f"{state}"))
    for where, root in (("live", live), ("config", config)):
        if where == "live" and not active:
            continue
        if domxml.vcpu_count(root) != vcpus:
            alerts.append(Alert(VCPUS_CHANGED, name, f"{where}: {domxml.vcpu_count(root)} "
                                                     f"vCPUs, ppec built {vcpus}"))
        mem = _memory(root)
        if mem != {memory_mib}:
            alerts.append(Alert(MEMORY_CHANGED, name, f"{where}: "
                                f"{'/'.join(map(str, sorted(mem)))} MiB, ppec built "
                                f"{memory_mib} MiB"))
        io_pin, emu_pin = root.find("cputune/iothreadpin"), root.find("cputune/emulatorpin")
        if io_pin is not None and emu_pin is not None and \
                io_pin.get("cpuset") != emu_pin.get("cpuset"):
            alerts.append(Alert(PINNING_CHANGED, name, f"{where}: I/O thread on CPUs "
                                f"{io_pin.get('cpuset')}, ppec pins it with the emulator on "
                                f"{emu_pin.get('cpuset')}"))
        disks = set(domxml.disk_paths(root))
        for extra in sorted(disks - expected_disks[where] - optional_disks):
            alerts.append(Alert(DISK_ADDED, name, f"{where}: {extra} attached outside ppec"))
        for gone in sorted(expected_disks[where] - disks):
            alerts.append(Alert(DISK_REMOVED, name, f"{where}: {gone} detached outside ppec"))
    if held is not None and live_held is not None and held != live_held:
        alerts.append(Alert(PINNING_CHANGED, name,
                            f"ppec holds CPUs {format_cpulist(held[0]) or '-'} memory "
                            f"{list(held[1])}, live XML has {format_cpulist(live_held[0]) or '-'}"
                            f" memory {list(live_held[1])}"))
    return _first_of_each(alerts)


def compare_backing(name: str, page_kib: int, active: bool, live: ET.Element,
                    config: ET.Element) -> list[Alert]:
    """The guest RAM's huge pages as ppec built them (``page_kib``; 0: none) against the
    live and saved XML."""
    alerts = []
    for where, root in (("live", live), ("config", config)):
        if where == "live" and not active:
            continue
        page = root.find("memoryBacking/hugepages/page")
        have = int(page.get("size", "0")) if page is not None else \
            (-1 if root.find("memoryBacking/hugepages") is not None else 0)
        if have != page_kib:
            alerts.append(Alert(MEMORY_BACKING_CHANGED, name, f"{where}: huge pages "
                                f"{have or 'none'} KiB, ppec built {page_kib or 'none'}"))
    return alerts[:1]


def compare_nics(name: str, expected: dict[str, str], active: bool, live: ET.Element,
                 config: ET.Element) -> list[Alert]:
    """The VM's interfaces against the NICs ppec gave it (``expected``: MAC -> the bridge
    or device its VRF's network names), in the live and the saved XML."""
    alerts = []
    for where, root in (("live", live), ("config", config)):
        if where == "live" and not active:
            continue
        have = {i.mac: i.source for i in domxml.interfaces(root)}
        for mac in sorted(set(have) - set(expected)):
            alerts.append(Alert(NIC_ADDED, name, f"{where}: NIC {mac} on {have[mac]} "
                                                 f"attached outside ppec"))
        for mac in sorted(set(expected) - set(have)):
            alerts.append(Alert(NIC_REMOVED, name, f"{where}: NIC {mac} "
                                                   f"({expected[mac]}) detached outside ppec"))
        for mac in sorted(m for m in set(expected) & set(have) if have[m] != expected[m]):
            alerts.append(Alert(NIC_CHANGED, name, f"{where}: NIC {mac} is on {have[mac]}, "
                                                   f"ppec put it on {expected[mac]}"))
    return _first_of_each(alerts)


def _first_of_each(alerts: list[Alert]) -> list[Alert]:
    # Same code twice (live and config) says one thing: keep the first.
    seen, out = set(), []
    for a in alerts:
        if (a.code, a.object) not in seen:
            seen.add((a.code, a.object))
            out.append(a)
    return out
