"""Generated domain XML: golden file, and accepted by real libvirt drivers."""

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from ppec.agent import domxml
from tests.realparts import TEST_NODE_URI, unique

GOLDEN = Path(__file__).parent / "golden" / "domain-basic.xml"
SPEC = domxml.DomainSpec(name="web-01", uuid="6f1c2b1e-5d3a-4c0e-9a55-1c2d3e4f5a6b",
                         domain_type="kvm", arch="x86_64", vcpus=2, memory_mib=2048,
                         disk_path="/var/lib/ppec/disks/web-01.qcow2", host="bm-01",
                         created="2026-11-24T00:00:00+00:00")


def test_golden() -> None:
    xml = domxml.build_domain(SPEC)
    if os.environ.get("PPEC_UPDATE_GOLDEN"):
        GOLDEN.write_text(xml + "\n")
    assert xml + "\n" == GOLDEN.read_text()


def test_names_and_paths_are_escaped_not_concatenated() -> None:
    spec = domxml.DomainSpec(**{**SPEC.__dict__, "disk_path": "/d/<a&b>'\".qcow2"})
    root = ET.fromstring(domxml.build_domain(spec))
    assert domxml.disk_paths(root) == ["/d/<a&b>'\".qcow2"]


def test_ownership_round_trips() -> None:
    root = ET.fromstring(domxml.build_domain(SPEC))
    assert domxml.ownership(root) == domxml.Ownership("bm-01", "2026-11-24T00:00:00+00:00")
    assert domxml.ownership(ET.fromstring("<domain><name>x</name></domain>")) is None


def _define_and_read_back(uri: str, domain_type: str) -> None:
    conn = libvirt.open(uri)
    name = unique("golden")
    spec = domxml.DomainSpec(**{**SPEC.__dict__, "name": name, "domain_type": domain_type,
                                "uuid": str(__import__("uuid").uuid4())})
    dom = conn.defineXML(domxml.build_domain(spec))
    try:
        root = ET.fromstring(dom.XMLDesc(0))
        assert domxml.ownership(root) == domxml.Ownership("bm-01", spec.created)
        assert domxml.vcpu_count(root) == 2
        assert domxml.disk_paths(root) == [spec.disk_path]
    finally:
        dom.undefine()
        conn.close()


def test_test_driver_accepts_it() -> None:
    _define_and_read_back(TEST_NODE_URI, "test")


def test_qemu_driver_accepts_it(qemu_ready: None) -> None:
    _define_and_read_back("qemu:///system", "qemu")


@pytest.mark.parametrize("field", ["name", "disk_path", "host"])
def test_builder_uses_the_spec(field: str) -> None:
    spec = domxml.DomainSpec(**{**SPEC.__dict__, field: "zz-marker"})
    assert "zz-marker" in domxml.build_domain(spec)
