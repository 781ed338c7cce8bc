from __future__ import annotations

import subprocess
import sys

import pytest

from ppec.numa import from_capabilities, from_sysfs, single_node
from ppec.numa.topology import format_cpulist, parse_cpulist
from tests.numa.conftest import FIXTURES, load


def test_fixtures_are_what_the_generator_writes() -> None:
    sys.path.insert(0, str(FIXTURES))
    try:
        import gen  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    for name, text in gen.FIXTURES.items():
        assert (FIXTURES / name).read_text() == text, name


@pytest.mark.parametrize(("name", "cells", "cpus", "tpc", "mem"), [
    ("one-node-nosmt", 1, 8, 1, [32768]),
    ("two-socket-smt", 2, 64, 2, [131072] * 2),
    ("four-node", 4, 32, 1, [65536] * 4),
    ("epyc-8node-smt", 8, 128, 2, [65536] * 8),
    ("asymmetric-memory", 2, 16, 1, [16384, 4096]),
])
def test_fixture_shapes(name: str, cells: int, cpus: int, tpc: int, mem: list[int]) -> None:
    t = load(name)
    assert len(t.cells) == cells and len(t.cpu_ids) == cpus
    assert [c.memory_mib for c in t.cells] == mem
    assert {len(cpu.siblings) for cell in t.cells for cpu in cell.cpus} == {tpc}
    for cell in t.cells:   # siblings never cross a cell
        ids = {c.id for c in cell.cpus}
        assert all(c.siblings <= ids for c in cell.cpus)


def test_two_socket_siblings_are_i_and_i_plus_32() -> None:
    t = load("two-socket-smt")
    cpu5 = next(c for c in t.cells[0].cpus if c.id == 5)
    assert cpu5.siblings == {5, 37}
    assert t.cell_of(37) == 0 and t.cell_of(16) == 1


def test_reserved_cpus_are_not_usable() -> None:
    t = load("one-node-nosmt", frozenset({0, 1}))
    assert [c.id for c in t.usable(t.cells[0])] == [2, 3, 4, 5, 6, 7]


def test_sysfs_agrees_with_libvirt_on_this_machine(qemu_ready: None) -> None:
    caps = subprocess.run(["virsh", "-c", "qemu:///system", "capabilities"],
                          capture_output=True, text=True, check=True).stdout
    lv, fs = from_capabilities(caps), from_sysfs()
    assert [(c.id, [(p.id, p.siblings) for p in c.cpus]) for c in lv.cells] == \
        [(c.id, [(p.id, p.siblings) for p in c.cpus]) for c in fs.cells]
    # libvirt reads the same MemTotal; allow for rounding to MiB.
    assert [abs(a.memory_mib - b.memory_mib) <= 1 for a, b in
            zip(lv.cells, fs.cells, strict=True)] == [True] * len(lv.cells)


def test_single_node_and_cpulist() -> None:
    t = single_node(4, 1024)
    assert len(t.cells) == 1 and t.cpu_ids == {0, 1, 2, 3}
    assert parse_cpulist("0-2,5,7-8") == {0, 1, 2, 5, 7, 8}


def test_cpulist_round_trip() -> None:
    """One parser and one formatter serve the agent's config, sysfs and libvirt's XML."""
    assert format_cpulist({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert parse_cpulist("0-2,5,7-8") == {0, 1, 2, 5, 7, 8}
    assert parse_cpulist("0-3,^1") == {0, 2, 3}
    for bad in ("3-1", "-1", "x", "1-y"):
        with pytest.raises(ValueError):
            parse_cpulist(bad)
