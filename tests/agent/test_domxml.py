"""Generated domain XML: golden file, and accepted by real libvirt drivers."""

import os
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from ppec.agent import domxml
from ppec.agent.tuning import DiskTuning
from ppec.numa import Plan, Request, fit, from_capabilities
from tests.numa.conftest import load
from tests.realparts import TEST_NODE_URI, unique

GOLDEN = Path(__file__).parent / "golden" / "domain-basic.xml"
GOLDEN_NUMA = Path(__file__).parent / "golden" / "domain-dedicated-2cells.xml"
NICS = (domxml.Interface(mac="02:70:70:0a:1b:2c", vrf="blue", kind="bridge",
                         source="br-blue", address="10.0.0.5/24", mtu=9000, queues=2),
        domxml.Interface(mac="02:70:70:0a:1b:2d", vrf="red", kind="macvtap", source="eno2",
                         queues=2, driver="qemu"))
SPEC = domxml.DomainSpec(name="web-01", uuid="6f1c2b1e-5d3a-4c0e-9a55-1c2d3e4f5a6b",
                         domain_type="kvm", arch="x86_64", vcpus=2, memory_mib=2048,
                         disk_path="/var/lib/ppec/disks/web-01.qcow2", host="bm-01",
                         created="2026-11-24T00:00:00+00:00", cpu_mode="host-model",
                         seed_path="/var/lib/ppec/disks/web-01-seed.iso", interfaces=NICS)


def test_golden() -> None:
    xml = domxml.build_domain(SPEC)
    if os.environ.get("PPEC_UPDATE_GOLDEN"):
        GOLDEN.write_text(xml + "\n")
    assert xml + "\n" == GOLDEN.read_text()


GOLDEN_KERNEL = Path(__file__).parent / "golden" / "domain-kernel-boot.xml"
KERNEL_SPEC = domxml.DomainSpec(**{
    **SPEC.__dict__, "domain_type": "qemu", "cpu_mode": "maximum", "interfaces": NICS[:1],
    "boot": domxml.KernelBoot("/var/lib/ppec/images/vmlinuz", "/var/lib/ppec/images/initrd",
                              "console=ttyS0 quiet"),
    "console_log": "/var/lib/ppec/console/web-01.log"})


def test_golden_kernel_boot_with_console_log() -> None:
    xml = domxml.build_domain(KERNEL_SPEC)
    if os.environ.get("PPEC_UPDATE_GOLDEN"):
        GOLDEN_KERNEL.write_text(xml + "\n")
    assert xml + "\n" == GOLDEN_KERNEL.read_text()
    root = ET.fromstring(xml)
    assert root.find("os/boot") is None   # the kernel boots, not the disk
    assert root.find("devices/serial/log").get("file") == KERNEL_SPEC.console_log  # type: ignore[union-attr]


def test_data_disk_and_reading_disks_back() -> None:
    root = ET.fromstring(domxml.build_domain(domxml.DomainSpec(**{**SPEC.__dict__,
                                                                  "seed_path": ""})))
    devices = root.find("devices")
    assert devices is not None
    devices.append(domxml.disk_element("/d/x.qcow2", "vdb", serial="ppec-vdb"))
    devices.append(domxml.disk_element("/d/y.raw", "sda", fmt="raw", bus="scsi"))
    assert not domxml.has_scsi_controller(root)
    devices.append(domxml.scsi_controller_element())
    assert domxml.has_scsi_controller(root)
    got = [(d.target, d.bus, d.device, d.path, d.serial) for d in domxml.disks(root)]
    assert got == [("vda", "virtio", "disk", SPEC.disk_path, ""),
                   ("vdb", "virtio", "disk", "/d/x.qcow2", "ppec-vdb"),
                   ("sda", "scsi", "disk", "/d/y.raw", "")]
    one = domxml.disk_xml(root, "vdb")
    assert one is not None and "ppec-vdb" in one and "/d/x.qcow2" in one
    assert domxml.disk_xml(root, "vdz") is None
    assert domxml.disk_paths(root) == [SPEC.disk_path, "/d/x.qcow2", "/d/y.raw"]


def _dedicated_spec() -> domxml.DomainSpec:
    """12 vCPUs over two cells of the four-node fixture, emulator isolated."""
    topo = load("four-node")
    plan = fit(topo, [], Request(vcpus=12, memory_mib=12288, emulator="isolate"))
    assert isinstance(plan, Plan)
    return domxml.DomainSpec(**{**SPEC.__dict__, "vcpus": 12, "memory_mib": 12288,
                                "plan": plan, "numa": domxml.NumaPolicy(
                                    "dedicated", "prefer", "isolate", "auto"),
                                # O_DIRECT storage: its I/O thread pinned with the emulator
                                "disk": DiskTuning("none", "native")})


def test_golden_dedicated() -> None:
    xml = domxml.build_domain(_dedicated_spec())
    if os.environ.get("PPEC_UPDATE_GOLDEN"):
        GOLDEN_NUMA.write_text(xml + "\n")
    assert xml + "\n" == GOLDEN_NUMA.read_text()


def test_live_pins_read_back_what_was_written() -> None:
    spec = _dedicated_spec()
    assert spec.plan is not None
    root = ET.fromstring(domxml.build_domain(spec))
    live = domxml.live_pins(root)
    assert live.vcpu_pins == spec.plan.vcpu_pins
    assert live.emulator_cpus == spec.plan.emulator_cpus
    assert live.cells == tuple((c.host_cell, c.memory_mib) for c in spec.plan.cells)
    owner = domxml.ownership(root)
    assert owner is not None and owner.numa == spec.numa


def test_names_and_paths_are_escaped_not_concatenated() -> None:
    spec = domxml.DomainSpec(**{**SPEC.__dict__, "disk_path": "/d/<a&b>'\".qcow2",
                                "seed_path": "/d/&<seed>.iso"})
    root = ET.fromstring(domxml.build_domain(spec))
    assert domxml.disk_paths(root) == ["/d/<a&b>'\".qcow2", "/d/&<seed>.iso"]


def test_ownership_round_trips() -> None:
    root = ET.fromstring(domxml.build_domain(SPEC))
    assert domxml.ownership(root) == domxml.Ownership(
        "bm-01", "2026-11-24T00:00:00+00:00",
        nics=(("02:70:70:0a:1b:2c", "blue", "10.0.0.5/24"), ("02:70:70:0a:1b:2d", "red", "")))
    assert domxml.ownership(root).address == "10.0.0.5/24"  # type: ignore[union-attr]
    assert domxml.ownership(ET.fromstring("<domain><name>x</name></domain>")) is None


def _define_and_read_back(uri: str, domain_type: str, base: domxml.DomainSpec = SPEC) -> None:
    conn = libvirt.open(uri)
    name = unique("golden")
    spec = domxml.DomainSpec(**{**base.__dict__, "name": name, "domain_type": domain_type,
                                "uuid": str(uuid.uuid4())})
    dom = conn.defineXML(domxml.build_domain(spec))
    try:
        root = ET.fromstring(dom.XMLDesc(0))
        owner = domxml.ownership(root)
        assert owner == domxml.Ownership("bm-01", spec.created, spec.numa, owner.nics)  # type: ignore[union-attr]
        assert [n[0] for n in owner.nics] == [i.mac for i in spec.interfaces]  # type: ignore[union-attr]
        assert domxml.vcpu_count(root) == spec.vcpus
        assert domxml.disk_paths(root) == [spec.disk_path, spec.seed_path]
        got = domxml.interfaces(root)
        assert [(i.mac, i.kind, i.source, i.model, i.queues) for i in got] == [
            (i.mac, i.kind, i.source, "virtio", i.queues) for i in spec.interfaces]
        if spec.plan is not None:
            assert domxml.live_pins(root).vcpu_pins == spec.plan.vcpu_pins
    finally:
        dom.undefine()
        conn.close()


def test_test_driver_accepts_it() -> None:
    _define_and_read_back(TEST_NODE_URI, "test")


def test_qemu_driver_accepts_it(qemu_ready: None) -> None:
    _define_and_read_back("qemu:///system", "qemu")


def test_drivers_accept_dedicated_domains(qemu_ready: None) -> None:
    _define_and_read_back(TEST_NODE_URI, "test", _dedicated_spec())
    # On this machine's own topology, so QEMU's driver validates real CPUs and nodes.
    caps = libvirt.open("qemu:///system").getCapabilities()
    topo = from_capabilities(caps)
    plan = fit(topo, [], Request(vcpus=len(topo.cpu_ids), memory_mib=64))
    assert isinstance(plan, Plan)
    spec = domxml.DomainSpec(**{**SPEC.__dict__, "vcpus": len(topo.cpu_ids),
                                "memory_mib": 64, "plan": plan,
                                "numa": domxml.NumaPolicy("dedicated")})
    _define_and_read_back("qemu:///system", "qemu", spec)


def test_builder_uses_the_spec() -> None:
    """Each field lands in its own element, read back by the parsers, not as a substring."""
    spec = domxml.DomainSpec(**{**SPEC.__dict__, "name": "zz-name", "disk_path": "/d/zz.qcow2",
                                "host": "zz-host"})
    root = ET.fromstring(domxml.build_domain(spec))
    assert root.findtext("name") == "zz-name"
    assert domxml.disk_paths(root)[0] == "/d/zz.qcow2"
    assert domxml.ownership(root).host == "zz-host"  # type: ignore[union-attr]


@pytest.mark.parametrize(("mode", "attrs", "model"), [
    ("host-model", {"mode": "host-model"}, None),
    ("host-passthrough", {"mode": "host-passthrough"}, None),
    ("maximum", {"mode": "maximum"}, None),
    ("Skylake-Server", {"mode": "custom", "match": "exact"}, "Skylake-Server")])
def test_cpu_model_is_never_left_out(mode: str, attrs: dict[str, str], model: str | None
                                     ) -> None:
    for spec in (SPEC, _dedicated_spec()):
        root = ET.fromstring(domxml.build_domain(
            domxml.DomainSpec(**{**spec.__dict__, "cpu_mode": mode})))
        cpu = root.find("cpu")
        assert cpu is not None and dict(cpu.attrib) == attrs
        assert cpu.findtext("model") == model
        # A dedicated VM keeps its guest topology and NUMA cells beside the model.
        assert (cpu.find("numa") is not None) == (spec.plan is not None)


def test_a_domain_built_from_the_wire_form_matches_the_golden_files() -> None:
    """vm.create's params -> VmSpec -> DomainSpec.for_vm: the same XML as the golden
    files, so the one VM shape loses nothing on its way to libvirt."""
    from ppec.wire.vmspec import VmSpec
    tcg = domxml.HostFacts("bm-01", "qemu", "x86_64", cpu_mode="maximum",
                           seed_path=SPEC.seed_path,
                           console_log="/var/lib/ppec/console/web-01.log")
    ids = {"uuid": SPEC.uuid, "created": SPEC.created, "disk_path": SPEC.disk_path}
    nic = {"vrf": "blue", "mac": NICS[0].mac, "address": NICS[0].address, "gateway": "",
           "dns": []}
    spec = VmSpec.from_params({
        "name": "web-01", "vcpus": 2, "memory_mib": 2048, "disk_bytes": 1 << 30,
        "boot": {"kernel": "/var/lib/ppec/images/vmlinuz",
                 "initrd": "/var/lib/ppec/images/initrd", "cmdline": "console=ttyS0 quiet"},
        "nics": [nic]})
    built = domxml.DomainSpec.for_vm(spec, tcg, **ids, interfaces=NICS[:1])
    assert built == KERNEL_SPEC
    assert domxml.build_domain(built) + "\n" == GOLDEN_KERNEL.read_text()
    plain = VmSpec.from_params({"name": "web-01", "vcpus": 2, "memory_mib": 2048,
                                "disk_bytes": 1 << 30})
    kvm = domxml.HostFacts("bm-01", "kvm", "x86_64", cpu_mode="host-model",
                           seed_path=SPEC.seed_path)
    assert domxml.DomainSpec.for_vm(plain, kvm, **ids, interfaces=NICS) == SPEC
    dedicated = VmSpec.from_params({"name": "web-01", "vcpus": 12, "memory_mib": 12288,
                                    "disk_bytes": 1 << 30, "numa": "dedicated",
                                    "numa_nodes": 2, "threads": "isolate"})
    numa = domxml.DomainSpec.for_vm(dedicated, kvm, **ids).numa
    assert numa == domxml.NumaPolicy("dedicated", "isolate", "share", "2")
