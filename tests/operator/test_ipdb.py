"""IP pools per VRF on the store: constraints, exhaustion, races between processes."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ppec.core.errors import AlreadyExists, BadInput, Conflict, NoCapacity, NotFound
from ppec.operator import ipdb
from ppec.operator.store import Store
from tests.conftest import direct
from tests.realparts import Agent, Cli


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.close()


@pytest.mark.parametrize(("kw", "words"), [
    ({"cidr": "10.0.0.0/33"}, "invalid CIDR"),
    ({"cidr": "10.0.0.1/24"}, "invalid CIDR"),
    ({"gateway": "10.9.9.1"}, "not inside"),
    ({"reserve": ["10.0.0.5-10.0.0.2"]}, "not inside"),
    ({"reserve": ["10.1.0.5"]}, "not inside"),
    ({"dns": ["dns.example"]}, "invalid DNS"),
    ({"vrf": ""}, "--vrf is required"),
    ({"name": "Bad Pool"}, "invalid pool name 'Bad Pool'"),
])
def test_bad_pools(store: Store, kw: dict[str, object], words: str) -> None:
    args: dict[str, object] = {"name": "p1", "vrf": "blue", "cidr": "10.0.0.0/24", **kw}
    with pytest.raises(BadInput, match=words):
        ipdb.add_pool(store, **args)  # type: ignore[arg-type]


def test_overlapping_pools_in_one_vrf_are_refused(store: Store) -> None:
    ipdb.add_pool(store, "p1", "blue", "10.0.0.0/24")
    with pytest.raises(BadInput, match="overlaps pool p1"):
        ipdb.add_pool(store, "p2", "blue", "10.0.0.128/25")
    ipdb.add_pool(store, "p3", "red", "10.0.0.0/24")   # another VRF: fine
    with pytest.raises(AlreadyExists):
        ipdb.add_pool(store, "p1", "green", "10.5.0.0/24")


def test_gateway_reserved_network_and_broadcast_are_never_given(store: Store) -> None:
    pool = ipdb.add_pool(store, "p1", "blue", "10.0.0.0/29", gateway="10.0.0.1",
                         reserve=["10.0.0.2-10.0.0.3"])
    assert pool.usable() == 3
    got = [ipdb.allocate(store, "blue", owner=f"o{i}")["address"] for i in range(3)]
    assert got == ["10.0.0.4", "10.0.0.5", "10.0.0.6"]
    with pytest.raises(NoCapacity, match="pool exhausted: VRF blue has no free address"):
        ipdb.allocate(store, "blue")
    for bad in ("10.0.0.1", "10.0.0.2", "10.0.0.0", "10.0.0.7"):
        ipdb.release(store, "blue", "10.0.0.4")
        with pytest.raises(BadInput):
            ipdb.allocate(store, "blue", address=bad)
        ipdb.allocate(store, "blue", address="10.0.0.4", owner="o0")


def test_given_address_taken_and_release(store: Store) -> None:
    ipdb.add_pool(store, "p1", "blue", "10.0.0.0/24")
    ipdb.allocate(store, "blue", address="10.0.0.9", owner="web-1")
    with pytest.raises(AlreadyExists, match="already allocated to web-1"):
        ipdb.allocate(store, "blue", address="10.0.0.9")
    with pytest.raises(NotFound):
        ipdb.release(store, "blue", "10.0.0.10")
    with pytest.raises(BadInput, match="has no IP pool"):
        ipdb.allocate(store, "red")
    assert ipdb.update(store, "blue", "10.0.0.9", "vip")["previous_owner"] == "web-1"
    with pytest.raises(Conflict, match="is now owned by 'vip', not 'web-1'"):
        ipdb.update(store, "blue", "10.0.0.9", "x", expect_owner="web-1")
    with pytest.raises(NotFound):
        ipdb.update(store, "blue", "10.0.0.10", "x")
    assert ipdb.release(store, "blue", "10.0.0.9")["owner"] == "vip"


def test_a_direct_duplicate_insert_fails_on_the_constraint(store_url: str,
                                                           store: Store) -> None:
    ipdb.add_pool(store, "p1", "blue", "10.0.0.0/24")
    ipdb.allocate(store, "blue", address="10.0.0.9")
    with contextlib.closing(direct(store_url)) as db, pytest.raises(Exception) as e:
        db.execute("INSERT INTO ip_addresses (vrf, address, pool, owner, allocated_at) "
                   "VALUES ('blue', '10.0.0.9', 'p1', 'x', 'now')")
    assert "unique" in str(e.value).lower() or "duplicate" in str(e.value).lower()


def _race(db: str, processes: int, each: int) -> tuple[list[str], list[str]]:
    code = ("import sys\nfrom ppec.operator.store import Store\nfrom ppec.operator import ipdb\n"
            "from ppec.core.errors import NoCapacity\n"
            "s = Store(sys.argv[1])\n"
            "for i in range(int(sys.argv[2])):\n"
            "    try: print('OK', ipdb.allocate(s, 'blue', owner=sys.argv[3])['address'])\n"
            "    except NoCapacity as e: print('FULL', e.code, e.message)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db), str(each), f"p{p}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in range(processes)]
    ok, full = [], []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        for line in out.splitlines():
            (ok if line.startswith("OK") else full).append(line)
    return [x.split()[1] for x in ok], full


def test_200_concurrent_allocations_from_processes_never_repeat(store_url: str,
                                                                store: Store) -> None:
    ipdb.add_pool(store, "p1", "blue", "10.0.0.0/24", gateway="10.0.0.1")
    got, full = _race(store_url, processes=20, each=10)
    assert len(got) == 200 and len(set(got)) == 200 and full == []
    assert len(ipdb.addresses(store, "blue")) == 200


def test_a_29_gives_exactly_its_usable_count_under_a_race(store_url: str,
                                                           store: Store) -> None:
    ipdb.add_pool(store, "p1", "blue", "10.0.0.0/29", gateway="10.0.0.1")
    got, full = _race(store_url, processes=12, each=1)
    assert sorted(got) == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    assert len(full) == 7 and all("POOL_EXHAUSTED pool exhausted" in f for f in full)


def test_vm_create_takes_an_address_from_its_hosts_vrf_and_delete_frees_it(
        cli: Cli, net_agent: Agent) -> None:
    test_agent = net_agent
    cli.ok("host", "add", "t1", "--address", "local", "--socket", str(test_agent.socket),
           "--vrf", "blue")
    cli.ok("ip", "pool", "add", "p1", "--vrf", "blue", "--cidr", "10.0.0.0/30")
    vm = json.loads(cli.ok("vm", "create", "a1", "--flavor", "tiny", "-o", "json").stdout)
    assert vm["ip"]["address"] == "10.0.0.1" and vm["ip"]["prefix"] == 30
    assert vm["address"] == "10.0.0.1/30"       # as the agent recorded it in the domain
    seed = test_agent.storage / "a1-seed.iso"
    network = subprocess.run(["isoinfo", "-R", "-i", str(seed), "-x", "/network-config"],
                             capture_output=True, text=True, check=True).stdout
    assert json.loads(network)["ethernets"]["nic0"]["addresses"] == ["10.0.0.1/30"]
    owned = json.loads(cli.ok("ip", "list", "-o", "json").stdout)["addresses"]
    assert [(a["address"], a["owner"]) for a in owned] == [("10.0.0.1", "a1")]
    cli.ok("vm", "create", "a2", "--flavor", "tiny")
    full = cli.run("vm", "create", "a3", "--flavor", "tiny")
    assert full.returncode == 3
    assert "t1: no free address in VRF blue" in full.stderr
    assert cli.store_vms() == ["a1", "a2"] and sorted(test_agent.ledger_rows()) == ["a1", "a2"]
    cli.ok("vm", "delete", "a1")
    assert not seed.exists()
    assert [a["owner"] for a in json.loads(cli.ok("ip", "list", "-o", "json").stdout)[
        "addresses"]] == ["a2"]
    cli.ok("vm", "create", "a3", "--flavor", "tiny")
    # An address given to a VM's name would be released when that VM is deleted.
    cli.ok("ip", "pool", "add", "p9", "--vrf", "blue9", "--cidr", "10.9.9.0/29")
    cli.ok("ip", "allocate", "--vrf", "blue9", "--address", "10.9.9.2", "--owner", "lb")
    done = cli.run("ip", "update", "10.9.9.2", "--vrf", "blue9", "--owner", "a2")
    assert done.returncode == 2 and "'a2' is a VM" in done.stderr
    no_pool = cli.run("vm", "create", "a4", "--flavor", "tiny", "--vrf", "red")
    assert no_pool.returncode == 2 and "unknown VRF 'red'" in no_pool.stderr
    cli.ok("host", "add", "t2", "--address", "local", "--socket", str(test_agent.socket),
           "--vrf", "green", "--no-check")
    no_pool = cli.run("vm", "create", "a4", "--flavor", "tiny", "--vrf", "green")
    assert no_pool.returncode == 2
    assert "VRF 'green' has no IP pool: its VMs could get no address" in no_pool.stderr


def test_ip_cli_exit_codes(cli: Cli) -> None:
    cli.ok("ip", "pool", "add", "p1", "--vrf", "blue", "--cidr", "10.0.0.0/30",
           "--gateway", "10.0.0.1")
    assert cli.run("ip", "pool", "add", "p2", "--vrf", "blue",
                   "--cidr", "10.0.0.0/24").returncode == 2
    assert json.loads(cli.ok("ip", "allocate", "--vrf", "blue", "-o", "json").stdout)[
        "address"] == "10.0.0.2"
    done = cli.run("ip", "allocate", "--vrf", "blue")
    assert done.returncode == 3 and "pool exhausted" in done.stderr
    assert cli.run("ip", "allocate", "--vrf", "nope").returncode == 2
    assert cli.run("ip", "release", "10.0.0.3", "--vrf", "blue").returncode == 2
    assert cli.run("ip", "update", "10.0.0.3", "--vrf", "blue", "--owner", "x").returncode == 2
    done = cli.ok("ip", "update", "10.0.0.2", "--vrf", "blue", "--owner", "vip")
    assert "owner - -> vip" in done.stdout
    cli.ok("ip", "release", "10.0.0.2", "--vrf", "blue")
    pools = json.loads(cli.ok("ip", "pool", "list", "-o", "json").stdout)["pools"]
    assert [(p["name"], p["usable"]) for p in pools] == [("p1", 1)]


def test_a_named_ipv6_address_in_a_64_is_checked_without_listing_the_pool(store: Store) -> None:
    ipdb.add_pool(store, "v6", "blue6", "2001:db8::/64")
    got = ipdb.allocate(store, "blue6", address="2001:db8::10")
    assert got["address"] == "2001:db8::10" and got["prefix"] == 64
    with pytest.raises(BadInput, match="network, broadcast"):
        ipdb.allocate(store, "blue6", address="2001:db8::")
