"""Libvirt domain XML: one small builder per subtree, parsed back with ElementTree.

Never string concatenation: names and paths go through ElementTree's escaping.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from ppec.agent import tuning
from ppec.agent.nicxml import Interface as Interface
from ppec.agent.nicxml import InterfaceInfo as InterfaceInfo
from ppec.agent.nicxml import interface_element as interface_element
from ppec.agent.nicxml import interfaces as interfaces
from ppec.agent.tuning import DiskTuning
from ppec.numa import Plan
from ppec.numa.topology import format_cpulist as cpulist
from ppec.numa.topology import parse_cpulist
from ppec.wire.vmspec import KernelBoot as KernelBoot  # the one kernel-boot shape
from ppec.wire.vmspec import Pinning, VmSpec

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
    plan: Plan | None = None
    numa: NumaPolicy = field(default_factory=lambda: NumaPolicy())
    seed_path: str = ""             # cloud-init NoCloud ISO, attached as a CD-ROM
    boot: KernelBoot | None = None  # direct kernel boot instead of the disk's boot loader
    console_log: str = ""           # serial console copied here (by virtlogd)
    interfaces: tuple[Interface, ...] = ()
    cpu_mode: str = ""              # maximum | host-model | host-passthrough | a model; "": none
    disk: DiskTuning | None = None  # cache/io/discard and an I/O thread; None: libvirt's
    hugepage_kib: int = 0           # guest RAM from huge pages of this size (dedicated)

    @classmethod
    def for_vm(cls, spec: VmSpec, host: HostFacts, *, uuid: str, created: str,
               disk_path: str, plan: Plan | None = None,
               interfaces: tuple[Interface, ...] = ()) -> DomainSpec:
        """The domain of ``spec`` on this host: the VM's shape from the spec, the rest from
        the host (its facts, paths, the fit's plan, the NICs resolved to its networks)."""
        return cls(name=spec.name, uuid=uuid, domain_type=host.domain_type, arch=host.arch,
                   vcpus=spec.shape.vcpus, memory_mib=spec.shape.memory_mib,
                   disk_path=disk_path, host=host.name, created=created,
                   emulator=host.emulator, plan=plan, numa=NumaPolicy.of(spec.shape.pinning),
                   seed_path=host.seed_path, boot=spec.boot, console_log=host.console_log,
                   interfaces=interfaces, cpu_mode=host.cpu_mode, disk=host.disk,
                   hugepage_kib=spec.shape.pinning.hugepages)


@dataclass(frozen=True)
class HostFacts:
    """What the building host contributes to a VM's domain besides the VM itself."""

    name: str
    domain_type: str
    arch: str
    cpu_mode: str = ""
    emulator: str = ""
    seed_path: str = ""
    console_log: str = ""
    disk: DiskTuning | None = None


@dataclass(frozen=True)
class DiskInfo:
    """One ``<disk>`` of a domain's XML."""

    target: str
    bus: str
    device: str       # disk | cdrom
    path: str
    alias: str        # live XML only: the name libvirt's device events use
    serial: str


@dataclass(frozen=True)
class NumaPolicy:
    """What the VM asked for, kept in its metadata so the live XML alone can be re-read."""

    policy: str = "shared"
    threads: str = "prefer"
    emulator: str = "share"
    nodes: str = "auto"

    @classmethod
    def of(cls, pinning: Pinning) -> NumaPolicy:
        return cls(pinning.policy, pinning.threads, pinning.emulator,
                   str(pinning.nodes or "auto"))


@dataclass(frozen=True)
class Ownership:
    """What ppec wrote into a domain's ``<metadata>``: proof that ppec built it."""

    host: str
    created: str
    numa: NumaPolicy = field(default_factory=lambda: NumaPolicy())
    # (mac, vrf, address) of each NIC ppec made
    nics: tuple[tuple[str, str, str], ...] = ()

    @property
    def address(self) -> str:
        """The primary NIC's address (CIDR), or ""."""
        return self.nics[0][2] if self.nics else ""


@dataclass(frozen=True)
class LivePins:
    """CPU and memory placement read back from a domain's live XML."""

    vcpu_pins: tuple[int, ...]
    emulator_cpus: frozenset[int]
    cells: tuple[tuple[int, int], ...]     # (host cell, MiB) per guest cell
    float_cpus: frozenset[int]


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def metadata_element(spec: DomainSpec) -> ET.Element:
    vm = ET.Element(f"{{{NS}}}vm")
    _sub(vm, f"{{{NS}}}host", spec.host)
    _sub(vm, f"{{{NS}}}created", spec.created)
    n = spec.numa
    _sub(vm, f"{{{NS}}}numa", policy=n.policy, threads=n.threads, emulator=n.emulator,
         nodes=n.nodes)
    for nic in spec.interfaces:
        _sub(vm, f"{{{NS}}}nic", mac=nic.mac, vrf=nic.vrf, address=nic.address)
    return vm


def cdrom_element(path: str) -> ET.Element:
    disk = ET.Element("disk", type="file", device="cdrom")
    _sub(disk, "driver", name="qemu", type="raw")
    _sub(disk, "source", file=path)
    _sub(disk, "target", dev="hdc", bus="ide")
    _sub(disk, "readonly")
    return disk


def vcpu_element(spec: DomainSpec) -> ET.Element:
    el = ET.Element("vcpu", placement="static")
    el.text = str(spec.vcpus)
    if spec.plan is not None and spec.plan.float_cpus:
        el.set("cpuset", cpulist(spec.plan.float_cpus))
    return el


def cputune_element(plan: Plan, iothread: bool = False) -> ET.Element:
    tune = ET.Element("cputune")
    for vcpu, cpu in enumerate(plan.vcpu_pins):
        _sub(tune, "vcpupin", vcpu=str(vcpu), cpuset=str(cpu))
    _sub(tune, "emulatorpin", cpuset=cpulist(plan.emulator_cpus))
    if iothread:
        tuning.iothreadpin(tune, cpulist(plan.emulator_cpus))
    return tune


def numatune_element(plan: Plan) -> ET.Element:
    tune = ET.Element("numatune")
    _sub(tune, "memory", mode="strict",
         nodeset=cpulist(c.host_cell for c in plan.cells))
    for cell in plan.cells:
        _sub(tune, "memnode", cellid=str(cell.id), mode="strict", nodeset=str(cell.host_cell))
    return tune


def cpu_element(mode: str, plan: Plan | None, vcpus: int) -> ET.Element:
    """The guest CPU model (never left out: QEMU's default qemu64 is x86-64-v1, on which
    EL9-class guests die at boot) and, for dedicated VMs, the guest topology."""
    cpu = ET.Element("cpu")
    if mode in ("host-model", "host-passthrough", "maximum"):
        cpu.set("mode", mode)
    elif mode:
        cpu.set("mode", "custom")
        cpu.set("match", "exact")
        _sub(cpu, "model", mode, fallback="forbid")
    if plan is not None and plan.policy == "dedicated":
        cpu_topology(cpu, plan, vcpus)
    return cpu


def cpu_topology(cpu: ET.Element, plan: Plan, vcpus: int) -> None:
    """Guest topology that matches the host threads it runs on, one guest cell per host cell."""
    threads = plan.threads_per_core
    sizes = {len(c.vcpus) for c in plan.cells}
    even = len(sizes) == 1 and sizes.pop() % threads == 0
    sockets = len(plan.cells) if even else 1
    _sub(cpu, "topology", sockets=str(sockets), dies="1",
         cores=str(vcpus // threads // sockets), threads=str(threads))
    numa = _sub(cpu, "numa")
    for cell in plan.cells:
        _sub(numa, "cell", id=str(cell.id), cpus=cpulist(cell.vcpus),
             memory=str(cell.memory_mib), unit="MiB")


def os_element(spec: DomainSpec) -> ET.Element:
    os_el = ET.Element("os")
    _sub(os_el, "type", "hvm", arch=spec.arch)
    if spec.boot is None:
        _sub(os_el, "boot", dev="hd")
    else:
        _sub(os_el, "kernel", spec.boot.kernel)
        if spec.boot.initrd:
            _sub(os_el, "initrd", spec.boot.initrd)
        if spec.boot.cmdline:
            _sub(os_el, "cmdline", spec.boot.cmdline)
    return os_el


def disk_element(path: str, target: str, fmt: str = "qcow2", bus: str = "virtio",
                 serial: str = "", tune: DiskTuning | None = None,
                 iothread: bool = False) -> ET.Element:
    disk = ET.Element("disk", type="file", device="disk")
    driver = _sub(disk, "driver", name="qemu", type=fmt)
    if tune is not None:
        tune.driver(driver, iothread and bus == "virtio")
    _sub(disk, "source", file=path)
    _sub(disk, "target", dev=target, bus=bus)
    if serial:   # what the guest sees (/sys/block/*/serial, /dev/disk/by-id)
        _sub(disk, "serial", serial)
    return disk


def scsi_controller_element() -> ET.Element:
    return ET.Element("controller", type="scsi", model="virtio-scsi")


def has_scsi_controller(root: ET.Element) -> bool:
    return any(c.get("type") == "scsi" for c in root.findall("devices/controller"))


def disks(root: ET.Element) -> list[DiskInfo]:
    out = []
    for disk in root.findall("devices/disk"):
        target, src = disk.find("target"), disk.find("source")
        alias = disk.find("alias")
        out.append(DiskInfo(
            target=target.get("dev", "") if target is not None else "",
            bus=target.get("bus", "") if target is not None else "",
            device=disk.get("device", "disk"),
            path=(src.get("file") or src.get("dev") or "") if src is not None else "",
            alias=alias.get("name", "") if alias is not None else "",
            serial=disk.findtext("serial", "")))
    return out


def disk_sources(root: ET.Element) -> list[tuple[str, str]]:
    """(target, file) for every file a disk reads: its image and its backing chain."""
    out = []
    for disk in root.findall("devices/disk"):
        el = disk.find("target")
        target = el.get("dev", "") if el is not None else ""
        for src in disk.iter("source"):
            path = src.get("file") or src.get("dev") or ""
            if path:
                out.append((target, path))
    return out


def disk_xml(root: ET.Element, target: str) -> str | None:
    """The ``<disk>`` element for ``target`` as libvirt wrote it, for detaching it."""
    for disk in root.findall("devices/disk"):
        el = disk.find("target")
        if el is not None and el.get("dev") == target:
            return ET.tostring(disk, encoding="unicode")
    return None


def console_elements(log_path: str = "") -> list[ET.Element]:
    serial = ET.Element("serial", type="pty")
    if log_path:
        _sub(serial, "log", file=log_path, append="on")
    _sub(serial, "target", port="0")
    console = ET.Element("console", type="pty")
    _sub(console, "target", type="serial", port="0")
    return [serial, console]


def probe_domain(name: str, domain_type: str, arch: str, cpu_mode: str) -> str:
    """A diskless 16 MiB domain that only shows whether QEMU starts with this CPU."""
    dom = ET.Element("domain", type=domain_type)
    _sub(dom, "name", name)
    _sub(dom, "memory", "16", unit="MiB")
    _sub(dom, "vcpu", "1")
    _sub(_sub(dom, "os"), "type", "hvm", arch=arch)
    dom.append(cpu_element(cpu_mode, None, 1))
    return ET.tostring(dom, encoding="unicode")


def build_domain(spec: DomainSpec) -> str:
    dom = ET.Element("domain", type=spec.domain_type)
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", spec.uuid)
    _sub(dom, "metadata").append(metadata_element(spec))
    _sub(dom, "memory", str(spec.memory_mib), unit="MiB")
    if spec.hugepage_kib and spec.plan is not None and spec.plan.cells:
        dom.append(tuning.memory_backing(spec.hugepage_kib,
                                         cpulist({c.id for c in spec.plan.cells})))
    dom.append(vcpu_element(spec))
    if spec.disk is not None:
        dom.append(tuning.iothreads_element())
    if spec.plan is not None and spec.plan.policy == "dedicated":
        dom.append(cputune_element(spec.plan, iothread=spec.disk is not None))
        dom.append(numatune_element(spec.plan))
    dom.append(os_element(spec))
    # ACPI lets a guest take a graceful shutdown and disk hot-plug requests.
    _sub(_sub(dom, "features"), "acpi")
    if spec.cpu_mode or (spec.plan is not None and spec.plan.policy == "dedicated"):
        dom.append(cpu_element(spec.cpu_mode, spec.plan, spec.vcpus))
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    if spec.emulator:
        _sub(devices, "emulator", spec.emulator)
    devices.append(disk_element(spec.disk_path, "vda", tune=spec.disk,
                                iothread=spec.disk is not None))
    if spec.seed_path:
        devices.append(cdrom_element(spec.seed_path))
    devices.extend(interface_element(nic) for nic in spec.interfaces)
    devices.extend(console_elements(spec.console_log))
    _sub(devices, "memballoon", model="none")
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")


def ownership(root: ET.Element) -> Ownership | None:
    vm = root.find(f"metadata/{{{NS}}}vm")
    if vm is None:
        return None
    numa = vm.find(f"{{{NS}}}numa")
    policy = NumaPolicy() if numa is None else NumaPolicy(
        policy=numa.get("policy", "shared"), threads=numa.get("threads", "prefer"),
        emulator=numa.get("emulator", "share"), nodes=numa.get("nodes", "auto"))
    nics = tuple((n.get("mac", ""), n.get("vrf", ""), n.get("address", ""))
                 for n in vm.findall(f"{{{NS}}}nic"))
    if not nics and vm.findtext(f"{{{NS}}}address"):   # written before NICs: address only
        nics = (("", "", vm.findtext(f"{{{NS}}}address", "")),)
    return Ownership(host=vm.findtext(f"{{{NS}}}host", ""),
                     created=vm.findtext(f"{{{NS}}}created", ""), numa=policy, nics=nics)


def guest_cells(root: ET.Element) -> list[tuple[int, frozenset[int], int]]:
    """(id, vCPUs, MiB) of each guest NUMA cell the domain has."""
    cells = []
    for cell in root.findall("cpu/numa/cell"):
        mib = int(cell.get("memory", "0"))
        if cell.get("unit", "KiB") in ("KiB", "k", "K"):
            mib //= 1024
        cells.append((int(cell.get("id", "0")), parse_cpulist(cell.get("cpus", "")), mib))
    return cells


def live_pins(root: ET.Element) -> LivePins:
    pins = sorted((int(p.get("vcpu", "0")), parse_cpulist(p.get("cpuset", "")))
                  for p in root.findall("cputune/vcpupin"))
    emu = root.find("cputune/emulatorpin")
    memnodes = {int(m.get("cellid", "0")): int(m.get("nodeset", "0"))
                for m in root.findall("numatune/memnode")}
    cells = [(memnodes.get(cell, -1), mib) for cell, _, mib in guest_cells(root)]
    vcpu = root.find("vcpu")
    return LivePins(
        # A pin to several CPUs is not ppec's doing; keep its lowest for the record.
        vcpu_pins=tuple(min(cpus) for _, cpus in pins if cpus),
        emulator_cpus=parse_cpulist(emu.get("cpuset", "")) if emu is not None else frozenset(),
        cells=tuple(cells),
        float_cpus=parse_cpulist(vcpu.get("cpuset", "")) if vcpu is not None else frozenset())


def disk_paths(root: ET.Element) -> list[str]:
    return [d.path for d in disks(root) if d.path]


def vcpu_count(root: ET.Element) -> int:
    return int(root.findtext("vcpu", "0"))
