"""libvirt's bulk stats record (as `virsh domstats` prints it from QEMU) as a ppec sample."""

from __future__ import annotations

from ppec.agent import domstats

# Captured from a running test guest (virsh domstats), with a hot-plugged vdb and a
# backing-chain layer of vda that repeats its name.
RAW = {
    "state.state": 1, "state.reason": 1, "cpu.time": 16001127000, "cpu.user": 1,
    "balloon.current": 262144, "balloon.maximum": 262144, "balloon.rss": 233472,
    "vcpu.current": 2, "vcpu.maximum": 2,
    "vcpu.0.state": 1, "vcpu.0.time": 15410000000, "vcpu.0.wait": 0, "vcpu.0.delay": 2665,
    "vcpu.1.state": 1, "vcpu.1.time": 590000000, "vcpu.1.wait": 5, "vcpu.1.delay": 1000,
    "net.count": 1, "net.0.name": "vnet3", "net.0.rx.bytes": 100, "net.0.tx.bytes": 50,
    "net.0.rx.pkts": 2, "net.0.tx.pkts": 1,
    "block.count": 3, "block.0.name": "vda", "block.0.rd.bytes": 4608, "block.0.rd.reqs": 2,
    "block.0.wr.bytes": 0, "block.0.wr.reqs": 0,
    "block.1.name": "vda", "block.1.backingIndex": 1, "block.1.rd.bytes": 9,
    "block.2.name": "vdb", "block.2.wr.bytes": 19922944, "block.2.wr.reqs": 38,
}


def test_parse_sums_vcpus_and_keeps_the_top_layer_of_each_disk() -> None:
    s = domstats.parse("g1", RAW, 12.5)
    assert (s["name"], s["state"], s["clock_s"], s["vcpus"]) == ("g1", "running", 12.5, 2)
    assert (s["cpu_ns"], s["vcpu_ns"], s["steal_ns"], s["wait_ns"]) == (
        16001127000, 16000000000, 3665, 5)
    assert (s["memory_kib"], s["rss_kib"], s["available_kib"]) == (262144, 233472, None)
    assert [d["name"] for d in s["block"]] == ["vda", "vdb"]
    assert s["block"][0]["rd_bytes"] == 4608 and s["block"][1]["wr_reqs"] == 38
    assert s["net"] == [{"name": "vnet3", "rx_bytes": 100, "tx_bytes": 50, "rx_pkts": 2,
                         "tx_pkts": 1}]


def test_a_shut_off_domain_has_no_counters() -> None:
    s = domstats.parse("g2", {"state.state": 5, "state.reason": 0}, 1.0)
    assert s["state"] == "shut-off" and s["cpu_ns"] is None and s["vcpus"] is None
    assert s["steal_ns"] is None and s["block"] == [] and s["net"] == []


class _Dom:
    def __init__(self, name: str) -> None:
        self._name = name

    def name(self) -> str:
        return self._name


class _Conn:
    """A libvirt connection seam: a domain deleted between listing and reading once."""

    def __init__(self) -> None:
        self.listings = 0

    def listAllDomains(self, _flags: int) -> list[_Dom]:
        self.listings += 1
        return [_Dom("a"), _Dom("b")] if self.listings == 1 else [_Dom("a")]

    def domainListGetStats(self, doms: list[_Dom], _groups: int, _flags: int
                           ) -> list[tuple[_Dom, dict[str, int]]]:
        import libvirt
        if any(d.name() == "b" for d in doms):
            e = libvirt.libvirtError("Domain not found")
            e.err = (libvirt.VIR_ERR_NO_DOMAIN, 0, "Domain not found", 0, "", None, None,
                     0, 0)
            raise e
        return [(d, {"state.state": 1, "cpu.time": 5}) for d in doms]


def test_a_domain_gone_between_listing_and_reading_is_listed_again() -> None:
    conn = _Conn()
    found = domstats.sample(conn, ["a", "b"])  # type: ignore[arg-type]
    assert list(found) == ["a"] and found["a"]["cpu_ns"] == 5 and conn.listings == 2


def test_a_snapshot_survives_a_failure_to_measure() -> None:
    from ppec.agent.handlers.host import HostHandlers
    from ppec.core.errors import HypervisorError

    class Broken:
        def use(self, _vms: object) -> dict[str, object]:
            raise HypervisorError("domain stats: connection reset", code="LIBVIRT")

    handlers = HostHandlers.__new__(HostHandlers)
    handlers.meter = Broken()  # type: ignore[assignment]
    assert handlers._use([]) == {"error": {"code": "LIBVIRT",
                                         "message": "domain stats: connection reset"}}
