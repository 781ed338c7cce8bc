"""The destination XML of a migration (agent/migxml.py): only the host's parts change,
the pins are the target's own fit, never the source's."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest

from ppec.agent import domxml, migxml
from ppec.core.errors import BadInput, NoCapacity
from ppec.numa import Allocation, Plan, Request, fit
from ppec.numa.topology import parse_cpulist
from tests.agent.test_domxml import NICS, SPEC, _dedicated_spec
from tests.numa.conftest import load

TARGET_NICS = {NICS[0].mac: replace(NICS[0], source="br-blue-2"),
               NICS[1].mac: replace(NICS[1], kind="bridge", source="br-red")}


REQUEST = Request(vcpus=12, memory_mib=12288, emulator="isolate", numa_nodes=2)


def _source() -> domxml.DomainSpec:
    """12 vCPUs over two cells of the four-node fixture, emulator isolated."""
    plan = fit(load("four-node"), [], REQUEST)
    assert isinstance(plan, Plan)
    return replace(_dedicated_spec(), plan=plan)


def _target_plan(taken: frozenset[int]) -> Plan:
    """The same request on a four-node host where ``taken`` is held by another VM."""
    plan = fit(load("four-node"), [Allocation("other", "dedicated", len(taken), taken,
                                              ((0, 1024),))], REQUEST)
    assert isinstance(plan, Plan)
    return plan


def _target(plan: Plan) -> migxml.Target:
    return migxml.Target(host="bm-02", plan=plan, disks={
        "vda": "/srv/disks/web-01.qcow2", "hdc": "/srv/disks/web-01-seed.iso"},
        interfaces=TARGET_NICS, console_log="/srv/console/web-01.log")


def test_the_target_pins_and_paths_replace_the_sources() -> None:
    source = _source()
    assert source.plan is not None
    taken = frozenset(source.plan.held)           # the source's CPUs are busy there
    plan = _target_plan(taken)
    assert not plan.held & taken
    xml = migxml.destination(domxml.build_domain(replace(source, console_log="/a/c.log")),
                             _target(plan))
    root = ET.fromstring(xml)
    live = domxml.live_pins(root)
    assert live.vcpu_pins == plan.vcpu_pins and live.emulator_cpus == plan.emulator_cpus
    assert live.cells == tuple((c.host_cell, c.memory_mib) for c in plan.cells)
    owner = domxml.ownership(root)
    assert owner is not None and owner.host == "bm-02" and owner.numa == source.numa
    assert [d.path for d in domxml.disks(root)] == ["/srv/disks/web-01.qcow2",
                                                    "/srv/disks/web-01-seed.iso"]
    ifaces = {i.mac: (i.kind, i.source) for i in domxml.interfaces(root)}
    assert ifaces == {NICS[0].mac: ("bridge", "br-blue-2"), NICS[1].mac: ("bridge", "br-red")}
    assert {el.get("file") for el in root.iter("log")} == {"/srv/console/web-01.log"}
    # The guest's own parts are untouched: its CPU model and topology, name and UUID.
    before = ET.fromstring(domxml.build_domain(source))
    for path in ("cpu", "name", "uuid", "memory", "vcpu"):
        assert ET.tostring(root.find(path)) == ET.tostring(before.find(path))  # type: ignore[arg-type]


def test_a_shared_vm_gets_the_targets_pool_and_no_pins() -> None:
    src = ET.fromstring(domxml.build_domain(SPEC))
    tune = ET.SubElement(src, "cputune")   # as repin_shared leaves a live shared VM
    ET.SubElement(tune, "vcpupin", vcpu="0", cpuset="0-3")
    plan = fit(load("four-node"), [], Request(vcpus=2, memory_mib=2048, policy="shared"))
    assert isinstance(plan, Plan) and plan.float_cpus
    root = ET.fromstring(migxml.destination(ET.tostring(src, encoding="unicode"),
                                            _target(plan)))
    assert root.find("cputune") is None and root.find("numatune") is None
    vcpu = root.find("vcpu")
    assert vcpu is not None
    assert parse_cpulist(vcpu.get("cpuset", "")) == plan.float_cpus


def test_a_target_that_cannot_give_the_guest_its_cells_is_refused() -> None:
    source = _dedicated_spec()          # auto: 4 + 8 vCPUs over two cells
    assert source.plan is not None and len(source.plan.cells) == 2
    even = _target_plan(frozenset())    # 6 + 6: another guest, ABI-wise
    with pytest.raises(NoCapacity) as e:
        migxml.destination(domxml.build_domain(source), _target(even))
    assert e.value.code == "NUMA_LAYOUT" and "vCPUs 4-11" in e.value.message


def test_a_disk_or_nic_ppec_did_not_make_is_refused() -> None:
    plan = fit(load("four-node"), [], Request(vcpus=2, memory_mib=2048, policy="shared"))
    assert isinstance(plan, Plan)
    src = domxml.build_domain(SPEC)
    no_seed = replace(_target(plan), disks={"vda": "/srv/disks/web-01.qcow2"})
    with pytest.raises(BadInput) as e:
        migxml.destination(src, no_seed)
    assert e.value.code == "DISK_UNKNOWN" and "hdc" in e.value.message
    one_nic = replace(_target(plan), interfaces={NICS[0].mac: TARGET_NICS[NICS[0].mac]})
    with pytest.raises(BadInput) as e:
        migxml.destination(src, one_nic)
    assert e.value.code == "NIC_UNKNOWN" and NICS[1].mac in e.value.message
