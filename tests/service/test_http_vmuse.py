"""The snapshot's measured VM use on /metrics (two host gauges) and in the API, absent for a
snapshot from an agent that did not measure."""

from __future__ import annotations

import json

from ppec.service.http.metrics import HOST_FAMILIES, HostKey, host_lines
from ppec.service.http.snapcache import parse

TOPO = {"cells": [{"id": 0, "memory_mib": 4096, "cpus": [[0, 0, 0], [1, 0, 1]]}],
        "reserved": []}


def _lines(snapshot: dict[str, object]) -> dict[str, str]:
    parsed = parse("h1", 1.0, json.dumps({"topology": TOPO, "allocations": [], **snapshot}))
    key = HostKey(1.0, "ok", False, "eu", "r1")
    out = host_lines("h1", key, parsed, "fresh")
    assert len(out) == len(HOST_FAMILIES)
    return {family: line for (family, _, _), line in zip(HOST_FAMILIES, out, strict=True)}


def test_measured_use_becomes_two_gauges() -> None:
    got = _lines({"vm_use": {"cpu_used": 1.25, "rss_mib": 300, "vms": {}}})
    assert got["ppec_host_vm_cpu_used"] == 'ppec_host_vm_cpu_used{host="h1"} 1.25\n'
    assert got["ppec_host_vm_rss_bytes"] == f'ppec_host_vm_rss_bytes{{host="h1"}} {300 << 20}\n'
    assert got["ppec_host_vms"] == 'ppec_host_vms{host="h1"} 0\n'   # the others unmoved


def test_an_older_snapshot_has_no_sample() -> None:
    got = _lines({})
    assert got["ppec_host_vm_cpu_used"] == "" and got["ppec_host_vm_rss_bytes"] == ""


def test_the_api_host_carries_the_measured_use() -> None:
    from ppec.service.http.views import resources
    with_use = parse("h1", 1.0, json.dumps({"topology": TOPO, "allocations": [],
                                            "vm_use": {"cpu_used": 0.5, "rss_mib": 12}}))
    assert resources(with_use)["vm_use"] == {"cpu_used": 0.5, "rss_mib": 12}
    older = parse("h1", 1.0, json.dumps({"topology": TOPO, "allocations": []}))
    assert resources(older)["vm_use"] is None and resources(None)["vm_use"] is None
