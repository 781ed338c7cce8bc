"""VM NICs and host networks over the JSON API (issue 24): each VM's NICs come from its
stored document (MAC, VRF, address) completed with its host's snapshot (device, model,
queues, tap) by MAC; a VM made before documents has none. A host answer carries the
networks its agent found. The store is filled as the service's jobs fill it
(``fleetstate.record_round``) with generated snapshots in the agent's shape."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ppec.operator import config as ppec_config
from ppec.operator.store import Host, Store, fleetstate
from ppec.service.http import api, snapcache
from ppec.service.http.pages import PageAsk
from ppec.service.http.reader import Reader
from ppec.service.http.state import State
from tests.service.http_support import fill, get, serving

MAC_A, MAC_B, MAC_C = "52:54:00:0a:00:01", "52:54:00:0a:00:02", "52:54:00:0a:00:03"
NETWORKS = [
    {"name": "prod", "kind": "bridge", "source": "br-prod", "mtu": 9000, "present": True,
     "up": True, "device_mtu": 9000},
    {"name": "mgmt", "kind": "macvtap", "source": "eno2", "mtu": 0, "present": False,
     "up": False, "device_mtu": None},
    {"name": "backup", "kind": "bridge", "source": "br-bk", "mtu": 0, "present": True,
     "up": False, "device_mtu": 1500},
]
# What h00000's agent reports of its first VM: the primary NIC only (MAC_B's device is
# not in the snapshot, as for a NIC whose host has not been asked since it was added).
LIVE_A = {"mac": MAC_A, "vrf": "prod", "network": "prod", "bridge": "br-prod",
          "address": "10.93.0.2/24", "model": "virtio", "queues": 2, "target": "vnet3"}


def nic(mac: str, vrf: str, address: str = "", gateway: str = "") -> dict[str, Any]:
    return {"vrf": vrf, "mac": mac, "address": address, "gateway": gateway,
            "dns": [gateway] if gateway else []}


def document(name: str, nics: list[dict[str, Any]]) -> str:
    """A VM document in VmSpec.document's shape, as the store's ``spec`` column holds it."""
    return json.dumps({"v": 1, "name": name, "vcpus": 2, "memory_mib": 2048,
                       "disk_bytes": 1 << 30, "image": "", "numa": "shared", "numa_nodes": 1,
                       "threads": 1, "emulator": "", "boot": None, "nics": nics,
                       "ssh_keys": ["SHA256:" + "a" * 43], "user_data": ""})


def with_nics(location: str | Path) -> None:
    """Three generated hosts of three VMs each (h0000N-vm00M); h00000's newest snapshot
    has NICs, networks and CPU facts; h00001 failed its last round; h99999 has no
    snapshot yet. h00000-vm000 has two NICs, h00001-vm000 one, the rest no document."""
    fill(location, 3, vms=3, seed=5)
    store = Store(str(location))
    try:
        row = store.db.execute("SELECT data FROM snapshots WHERE host = ?", ("h00000",)
                               ).fetchone()
        data = json.loads(row[0])
        data["vms"][0]["nics"] = [LIVE_A]
        data.update(networks=NETWORKS, cpu_mode="host-model", cpu_model="Skylake-Server",
                    vhost_net=True, taken_at=time.time())
        fleetstate.record_round(store, [fleetstate.Success("h00000", data["taken_at"], data)],
                                [fleetstate.Failure("h00001", "UNREACHABLE", "refused")],
                                time.time())
        store.set_vm("h00000-vm000", spec=document("h00000-vm000", [
            nic(MAC_A, "prod", "10.93.0.2/24", "10.93.0.1"), nic(MAC_B, "mgmt")]))
        store.set_vm("h00001-vm000", spec=document("h00001-vm000", [
            nic(MAC_C, "prod", "10.93.0.7/24", "10.93.0.1")]))
        store.add_host(Host(name="h99999", address="127.0.0.9"))
    finally:
        store.close()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    location = tmp_path_factory.mktemp("http-nics") / "ppec.db"
    with_nics(location)
    return location


@pytest.fixture(scope="module")
def url(db: Path) -> Iterator[str]:
    with serving(db, warm_every=None) as base:
        yield base


def answer(url: str, path: str) -> Any:
    got = get(url + path)
    assert got.status == 200, (path, got.status, got.body[:300])
    return got.json()


def unseen(mac: str, vrf: str, address: str = "") -> dict[str, Any]:
    """A NIC the host's snapshot does not show: only the document's part."""
    return {"mac": mac, "vrf": vrf, "network": "", "bridge": "", "address": address,
            "model": "", "queues": 0, "target": ""}


def test_vm_nics_are_the_document_completed_by_the_snapshot(url: str) -> None:
    vms = {v["name"]: v for v in answer(url, "/api/v1/vms?host=h00000")["vms"]}
    assert vms["h00000-vm000"]["nics"] == [LIVE_A, unseen(MAC_B, "mgmt")]
    assert vms["h00000-vm001"]["nics"] == []       # NULL spec: made before documents
    assert answer(url, "/api/v1/vms/h00000-vm000")["nics"] == [LIVE_A, unseen(MAC_B, "mgmt")]


def test_every_vm_in_the_fleet_list_has_nics(url: str) -> None:
    vms = answer(url, "/api/v1/vms?limit=1000")["vms"]
    assert len(vms) == 9 and all(isinstance(v["nics"], list) for v in vms)
    assert [v["name"] for v in vms if v["nics"]] == ["h00000-vm000", "h00001-vm000"]


def test_a_vm_on_a_failed_host_keeps_its_documents_nics(url: str) -> None:
    vm = answer(url, "/api/v1/vms/h00001-vm000")
    assert vm["state"] == "unknown"      # its host failed: never "stopped"
    assert vm["nics"] == [unseen(MAC_C, "prod", "10.93.0.7/24")]


def test_the_host_answer_carries_networks_and_cpu(url: str) -> None:
    host = answer(url, "/api/v1/hosts/h00000")
    assert host["networks"] == NETWORKS
    assert (host["cpu_mode"], host["cpu_model"], host["vhost_net"]) == (
        "host-model", "Skylake-Server", True)
    assert {v["name"]: v["nics"] for v in host["vms"]}["h00000-vm000"][0] == LIVE_A
    older = answer(url, "/api/v1/hosts/h00002")     # an agent before networks
    assert (older["networks"], older["cpu_mode"], older["vhost_net"]) == ([], None, None)
    new = answer(url, "/api/v1/hosts/h99999")       # no snapshot yet
    assert (new["networks"], new["cpu_model"], new["numa"]) == (None, None, None)


def test_openapi_says_where_nics_and_networks_are(url: str) -> None:
    paths = answer(url, "/api/v1/openapi.json")["paths"]
    for path in ("/api/v1/vms", "/api/v1/vms/{name}"):
        assert "`nics`" in paths[path]["get"]["description"]
    assert "`networks`" in paths["/api/v1/hosts/{name}"]["get"]["description"]


class Counting(snapcache.SnapshotCache):
    """The cache, noting which hosts each page asked it for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[list[str]] = []

    def get(self, store: Store, stamps: dict[str, float]) -> dict[str, snapcache.Parsed]:
        self.asked.append(sorted(stamps))
        return super().get(store, stamps)


def test_a_page_decodes_only_its_own_hosts_snapshots_once(
        db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []
    real = snapcache.parse

    def parse(host: str, taken_at: float, text: str) -> snapcache.Parsed:
        decoded.append(host)
        return real(host, taken_at, text)
    monkeypatch.setattr(snapcache, "parse", parse)
    reader = Reader(str(db))
    reader.cache = cache = Counting()
    st = State(reader=reader, config=ppec_config.load(), fresh_for=30.0, clock=time.time)
    try:
        # 4 VMs (and the one that says more follow): h00000's three, h00001's first two
        page = api.vm_list(st, PageAsk(4, None))
        assert [v["name"] for v in page["vms"]][-1] == "h00001-vm000"
        assert page["vms"][0]["nics"][0] == LIVE_A
        assert cache.asked == [["h00000", "h00001"]] and sorted(decoded) == cache.asked[0]
        api.vm_list(st, PageAsk(4, None))
        assert len(decoded) == 2              # the same snapshots: not decoded again
    finally:
        reader.close()


def test_older_snapshots_parse_without_nics_or_networks() -> None:
    old = snapcache.parse("h", 1.0, json.dumps({
        "topology": {"cells": [], "reserved": []}, "allocations": [],
        "vms": [{"name": "a", "state": "running"}]}))
    assert (old.vm_nics, old.networks) == ({}, ())


def test_nics_on_each_backend(store_url: str) -> None:
    fill(store_url, 2, vms=1, seed=3)
    store = Store(store_url)
    try:
        store.set_vm("h00001-vm000", spec=document("h00001-vm000", [nic(MAC_C, "prod")]))
    finally:
        store.close()
    with serving(store_url, warm_every=None) as base:
        vms = {v["name"]: v["nics"] for v in answer(base, "/api/v1/vms")["vms"]}
    assert vms == {"h00000-vm000": [], "h00001-vm000": [unseen(MAC_C, "prod")]}
