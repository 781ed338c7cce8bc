"""Capacity counts: equal to placing one VM after another until nothing fits."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppec.numa import NoFit, fit
from ppec.numa import Request as NumaRequest
from ppec.placement import FleetIndex, Request, place
from ppec.placement.headroom import fleet_capacity, largest
from tests.placement.fleets import fleet, with_allocations
from tests.realparts import Agent, Cli

NOW = 1000.0


def place_until_full(hosts: list, req: Request) -> int:  # type: ignore[type-arg]
    """The brute force: the real placement, one VM at a time, each applied to its host."""
    index = FleetIndex(hosts)
    count = 0
    while (d := place(index, req, now=NOW)).host is not None:
        h = index.hosts[index.pos[d.host]]
        plan = fit(h.topology, h.allocations, req.numa_request, overcommit=h.overcommit)
        assert not isinstance(plan, NoFit)
        h = with_allocations(h, [plan.allocation(f"p{count}", req.vcpus, req.memory_mib)])
        index.update(replace(h, storage_free_bytes=h.storage_free_bytes - req.disk_bytes))
        count += 1
    return count


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 12), st.integers(0, 10_000), st.integers(1, 8),
       st.sampled_from([1024, 4096, 16384]), st.sampled_from([None, "dedicated"]),
       st.sampled_from([0, 1 << 30, 100 << 30]))
def test_count_equals_place_until_full(n: int, seed: int, vcpus: int, mem: int,
                                       policy: str | None, disk: int) -> None:
    hosts = [replace(h, storage_free_bytes=(seed % 7) << 33) for h in fleet(n, seed, now=NOW)]
    req = Request(vcpus=vcpus, memory_mib=mem, disk_bytes=disk,
                  numa=None if policy is None else NumaRequest(vcpus, mem, policy="dedicated"))
    caps = fleet_capacity(hosts, req, now=NOW)
    assert sum(c.fits for c in caps) == place_until_full(hosts, req)
    for c in caps:   # the per-node view adds up to the host view
        assert sum(c.per_node.values()) == c.fits


def test_spread_counts_one_per_key() -> None:
    hosts = fleet(40, 3, now=NOW)
    req = Request(vcpus=1, memory_mib=512)
    caps = fleet_capacity(hosts, req, now=NOW, spread="power_domain")
    assert sum(c.fits for c in caps) == len({h.power_domain for h in hosts if not h.drained})
    assert sum(c.fits for c in fleet_capacity(hosts, req, now=NOW, spread="host")) == \
        sum(1 for c in fleet_capacity(hosts, req, now=NOW) if c.fits)


def test_largest_vm_fits_and_one_more_vcpu_does_not() -> None:
    hosts = fleet(8, 5, now=NOW)
    big = largest(hosts, dedicated=True, now=NOW)
    h = next(x for x in hosts if x.name == big["host"])
    v, m = int(big["vcpus"]), int(big["memory_mib"])  # type: ignore[call-overload]
    assert not isinstance(fit(h.topology, h.allocations, NumaRequest(v, m, "dedicated")), NoFit)
    assert isinstance(fit(h.topology, h.allocations, NumaRequest(v, m + 1, "dedicated")),
                      NoFit)
    for other in hosts:
        if not other.drained:
            assert isinstance(fit(other.topology, other.allocations,
                                  NumaRequest(v + 1, 1, "dedicated")), NoFit)


def test_capacity_cli_on_real_agents(cli: Cli, tmp_path: Path) -> None:
    a = Agent(tmp_path / "a", host="a", libvirt_uri="test:///default").start()
    b = Agent(tmp_path / "b", host="b", libvirt_uri="test:///default").start()
    try:
        cli.ok("host", "add", "a", "--address", "local", "--socket", str(a.socket),
               "--region", "eu", "--rack", "r1")
        cli.ok("host", "add", "b", "--address", "local", "--socket", str(b.socket),
               "--region", "eu", "--rack", "r2")
        cli.ok("vm", "create", "x", "--cpus", "3", "--memory", "512M", "--disk", "1G",
               "--numa", "dedicated", "--host", "a")
        # vm create snapshotted only the host it asked (a); b has never been synced.
        # vm create snapshotted only the host it asked (a), before it built x there: that
        # snapshot does not count x, so capacity does not count a; b was never synced.
        before = json.loads(cli.ok("capacity", "-o", "json").stdout)
        assert [e["host"] for e in before["excluded"]] == ["a", "b"]
        assert before["excluded"][0]["reason"].startswith(
            "snapshot changed (taken before a VM change at ")
        assert before["excluded"][1] == {"host": "b", "reason": "no snapshot"}
        cli.ok("sync")
        doc = json.loads(cli.ok("capacity", "--cpus", "2", "--memory", "256M", "--numa",
                                "dedicated", "-o", "json").stdout)
        fits = {g["group"]: g["fits"] for g in doc["groups"]}
        # test:///default: 2 nodes x 8 CPUs; a lost 3 CPUs on node 0 (2 + 2 + 1 left there).
        assert fits == {"a": 6, "b": 8} and doc["total"]["fits"] == 14
        assert doc["groups"][0]["where"] == [{"host": "a", "fits": 6}]
        numa = json.loads(cli.ok("capacity", "--cpus", "2", "--memory", "256M", "--numa",
                                 "dedicated", "--by", "numa", "-o", "json").stdout)
        per_host: dict[str, int] = {}
        for g in numa["groups"]:
            host = g["group"].split("/")[0]
            per_host[host] = per_host.get(host, 0) + g["fits"]
        assert per_host == fits
        region = json.loads(cli.ok("capacity", "--flavor", "tiny", "--by", "region",
                                   "-o", "json").stdout)
        assert [g["group"] for g in region["groups"]] == ["eu"]
        csv = cli.ok("capacity", "--by", "rack", "-o", "csv").stdout.splitlines()
        assert csv[0].startswith("group,hosts,cpus") and csv[1].startswith("r1,1,16,3,")
        biggest = json.loads(cli.ok("capacity", "--max", "-o", "json").stdout)["largest"]
        assert biggest["dedicated"]["host"] == "b" and biggest["dedicated"]["vcpus"] == 16
        spread = json.loads(cli.ok("capacity", "--flavor", "tiny", "--spread", "rack",
                                   "-o", "json").stdout)
        assert spread["total"]["fits"] == 2
        with __import__("sqlite3").connect(cli.db) as db:
            db.execute("UPDATE snapshots SET taken_at = taken_at - 100000 WHERE host='b'")
        stale = json.loads(cli.ok("capacity", "-o", "json").stdout)
        assert stale["excluded"] == [{"host": "b", "reason": "snapshot stale"}]
        listed = {h["name"]: h["state"] for h in json.loads(
            cli.ok("host", "list", "-o", "json").stdout)["hosts"]}
        assert listed == {"a": "fresh", "b": "stale"}
    finally:
        a.kill()
        b.kill()



def test_at_least_what_ganeti_hspace_finds() -> None:
    """Same empty fleet, no NUMA, no N+1: ppec's count is at least hspace's."""
    from pathlib import Path as P

    from tests.placement.fleets import HSPACE, hspace_count, identical
    if not P(HSPACE).exists():
        import pytest
        pytest.skip(f"Ganeti's hspace not installed ({HSPACE}; Debian ganeti-htools-3.0)")
    hosts = identical(20, NOW)
    req = Request(vcpus=2, memory_mib=2048, disk_bytes=10 << 30)
    ours = sum(c.fits for c in fleet_capacity(hosts, req, now=NOW))
    theirs = hspace_count(20, 2, 2048, 10 * 1024)
    assert ours >= theirs and theirs > 0, (ours, theirs)
