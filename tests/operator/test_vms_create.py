"""`vms.create` in-process: its retry and release paths, with scripted agents behind a fake
transport (the one seam: each host's byte stream) and a real SQLite store.

The agents speak the real protocol to the real AgentClient; only what they answer is
scripted, so the paths a live fleet hits rarely (a late refusal, a lost reply, a race for
an HA spread key) run here on purpose, every time.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from ppec.core.errors import AlreadyExists, NoCapacity
from ppec.numa.serial import topology_to_dict
from ppec.operator import config as ppec_config
from ppec.operator import ipdb, vms
from ppec.operator.choose import Ask
from ppec.operator.claim import OutcomeUnknown
from ppec.operator.context import Context
from ppec.operator.fleet.client import AgentClient, Reach
from ppec.operator.store import Host, Store
from ppec.wire import protocol
from ppec.wire.vmspec import Nic, Shape, VmSpec
from tests.placement.fleets import topology

SHAPE = Shape(vcpus=2, memory_mib=1024, disk_bytes=1 << 30)
DROP = object()   # the request arrived; the connection dies before any answer


class FakeAgent:
    """One host's agent: answers ping and host.snapshot as an empty 16-CPU host, and
    vm.create / vm.get as scripted. ``creates`` holds the outcome of each vm.create in
    turn: "ok", "full" (a late NO_CAPACITY), "full-if-first", "exists", "lost" (built, reply lost),
    "interrupt" (the operator presses ^C while waiting)."""

    def __init__(self, name: str, creates: list[str], gets: str = "answer") -> None:
        self.name = name
        self.creates = list(creates)
        self.gets = gets                   # "answer" (what was built) or "drop"
        self.built: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.journal: list[str] = []       # shared by a fleet: who was asked to build

    def answer(self, method: str, params: dict[str, Any]) -> object:
        self.calls.append((method, params))
        if method == "ping":
            return {"version": "test", "host": self.name}
        if method == "host.snapshot":
            return empty_host(time.time())
        if method == "vm.get":
            if self.gets == "drop":
                return DROP
            if params["name"] not in self.built:
                return _error("NOT_FOUND", f"no VM named {params['name']} on {self.name}")
            return self.built[params["name"]]
        assert method == "vm.create", method
        self.journal.append(self.name)
        outcome = self.creates.pop(0)
        if outcome == "full-if-first":   # whichever host placement ranks first refuses
            outcome = "full" if len(self.journal) == 1 else "ok"
        if outcome == "full":
            return _error("NO_CAPACITY", "NUMA: node 0 has 1 free CPUs, needs 2")
        if outcome == "exists":
            return _error("ALREADY_EXISTS", f"a domain named {params['name']} already exists")
        if outcome == "interrupt":
            raise KeyboardInterrupt
        vm = {"name": params["name"], "state": "running", "vcpus": params["vcpus"],
              "memory_mib": params["memory_mib"], "disk_bytes": params["disk_bytes"]}
        self.built[params["name"]] = vm
        return DROP if outcome == "lost" else vm

    def vm_creates(self) -> list[dict[str, Any]]:
        return [p for m, p in self.calls if m == "vm.create"]

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.calls if m == method)


def empty_host(taken_at: float) -> dict[str, Any]:
    """A snapshot of an empty 16-CPU host, as the agent sends it."""
    return {"taken_at": taken_at, "topology": topology_to_dict(topology(2, 8, 1, 16)),
            "allocations": [], "cpu_overcommit": 4.0, "storage_free_bytes": 1 << 40,
            "networks": [{"name": "blue", "kind": "bridge", "source": "br-blue", "mtu": 0,
                          "present": True, "up": True, "device_mtu": 1500}]}


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": {}}}


class ScriptedStream:
    """A Stream (ppec.operator.fleet.transport) whose far end is a FakeAgent."""

    def __init__(self, agent: FakeAgent) -> None:
        self.agent = agent
        self.pending = b""
        self.dropped = False

    def send(self, data: bytes, timeout: float) -> None:
        request = json.loads(data)
        reply = self.agent.answer(request["method"], request["params"])
        if reply is DROP:
            self.dropped = True
            return
        assert isinstance(reply, dict)
        body: dict[str, Any] = {"v": protocol.VERSION, "id": request["id"]}
        body.update({"ok": False, **reply} if "error" in reply else
                    {"ok": True, "result": reply})
        self.pending += json.dumps(body).encode() + b"\n"

    def recv(self, timeout: float) -> bytes:
        if self.dropped:
            return b""   # the real LineReader turns this into a TransportError
        data, self.pending = self.pending, b""
        return data

    def close(self) -> None:
        self.pending = b""


class Fleet:
    """The store, the context and the scripted agents of one test."""

    def __init__(self, tmp: Path, agents: list[FakeAgent], pool: bool = True,
                 config: str = "") -> None:
        self.db = tmp / "ppec.db"
        self.agents = {a.name: a for a in agents}
        self.journal: list[str] = []
        for a in agents:
            a.journal = self.journal
        self.store = Store(self.db)
        for a in agents:
            self.store.add_host(Host(name=a.name, address=f"{a.name}.example", vrf="blue"))
        if pool:
            ipdb.add_pool(self.store, "p1", "blue", "10.0.0.0/29", gateway="10.0.0.6")
        (tmp / "config.toml").write_text(config)
        self.ctx = Context(store=self.store, config=ppec_config.load(tmp / "config.toml"),
                           reach=Reach(known_hosts=tmp / "known_hosts"), connect=self.connect)

    def connect(self, host: Host, reach: Reach) -> AgentClient:
        agent = self.agents[host.name]
        return AgentClient(host, reach, opener=lambda: ScriptedStream(agent))

    def create(self, name: str = "web-1", ask: Ask | None = None) -> dict[str, Any]:
        return vms.create(self.ctx, name, ask or Ask(SHAPE))

    def asked(self) -> list[str]:
        """The hosts asked to build, in the order they were asked."""
        return list(self.journal)

    def row(self, name: str = "web-1") -> tuple[str, str] | None:
        vm = self.store.vm_or_none(name)
        return None if vm is None else (vm.host, vm.state)

    def addresses(self) -> list[tuple[str, str]]:
        return [(a["address"], a["owner"]) for a in ipdb.addresses(self.store, None)]


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    made: list[Fleet] = []

    def build(*agents: FakeAgent, pool: bool = True, config: str = "") -> Fleet:
        made.append(Fleet(tmp_path, list(agents), pool, config))
        return made[-1]
    yield build
    for f in made:
        f.ctx.close()


def test_a_late_refusal_moves_the_vm_to_the_next_candidate(make: Callable[..., Fleet]) -> None:
    fleet = make(FakeAgent("h1", ["full-if-first"]), FakeAgent("h2", ["full-if-first"]))
    doc = fleet.create()
    refused, took = fleet.asked()
    assert refused != took and doc["host"] == took and doc["attempts"] == 2
    assert fleet.agents[took].creates == [] and fleet.agents[refused].creates == []
    assert fleet.row() == (took, "running")
    # The refused attempt's address went back; the VM holds exactly one.
    assert fleet.addresses() == [("10.0.0.1", "web-1")]
    assert doc["ip"]["address"] == "10.0.0.1"
    [nic] = fleet.agents[took].vm_creates()[0]["nics"]
    assert nic["address"] == "10.0.0.1/29"
    # Its MAC too: one NIC row, the one sent to the host that took it.
    with closing(sqlite3.connect(fleet.db)) as db:
        assert list(db.execute("SELECT vm, mac FROM vm_nics")) == [("web-1", nic["mac"])]


def test_the_wire_form_is_the_vm_spec(make: Callable[..., Fleet]) -> None:
    fleet = make(FakeAgent("h1", ["ok"]))
    fleet.create()
    [params] = fleet.agents["h1"].vm_creates()
    mac = params["nics"][0]["mac"]
    nic = Nic("blue", mac, "10.0.0.1/29", "10.0.0.6")
    assert params == VmSpec("web-1", SHAPE, nics=(nic,)).to_params()


def test_every_candidate_refusing_is_no_capacity_and_releases_everything(
        make: Callable[..., Fleet]) -> None:
    fleet = make(*(FakeAgent(f"h{i}", ["full"]) for i in (1, 2, 3)))
    with pytest.raises(NoCapacity) as caught:
        fleet.create()
    assert caught.value.exit_code == 3
    assert sorted(fleet.asked()) == ["h1", "h2", "h3"]
    for host in ("h1", "h2", "h3"):
        assert f"{host}: NUMA: node 0 has 1 free CPUs, needs 2" in caught.value.message
    assert caught.value.message.startswith("no host can take web-1: ")
    assert len(caught.value.details["refusals"]) == 3
    assert fleet.row() is None and fleet.addresses() == []
    for agent in fleet.agents.values():   # room again: the name is free for a retry
        agent.creates = ["ok"]
    assert fleet.create()["state"] == "running"


def test_at_most_max_attempts_hosts_are_asked(make: Callable[..., Fleet]) -> None:
    # Placement offers all five (not its default three): the bound is create's own.
    fleet = make(*(FakeAgent(f"h{i}", ["full"]) for i in range(1, 6)),
                 config="[placement]\nmax_candidates = 10\n")
    with pytest.raises(NoCapacity) as caught:
        fleet.create()
    assert len(fleet.asked()) == vms.MAX_ATTEMPTS == 3
    assert len(caught.value.details["refusals"]) == vms.MAX_ATTEMPTS
    assert fleet.row() is None and fleet.addresses() == []


def test_an_agent_error_other_than_capacity_stops_and_releases(
        make: Callable[..., Fleet]) -> None:
    fleet = make(FakeAgent("h1", ["exists"]), FakeAgent("h2", ["exists"]))
    with pytest.raises(AlreadyExists, match="a domain named web-1 already exists"):
        fleet.create()
    assert len(fleet.asked()) == 1
    assert fleet.row() is None and fleet.addresses() == []


class RacingStore(Store):
    """The real store, with a rival `ppec vm create` (its own connection to the same file)
    that claims the HA spread key of the host we are about to claim, just before us."""

    rival: Callable[[str], None] | None = None

    def reserve_vm(self, name: str, host: str, shape: Shape, image: str, ha_group: str = "",
                   ha_key: str = "") -> None:
        if self.rival is not None:
            rival, self.rival = self.rival, None
            rival(host)
        super().reserve_vm(name, host, shape, image, ha_group, ha_key)


def test_an_ha_member_landing_first_replaces_the_vm(make: Callable[..., Fleet]) -> None:
    fleet = make(*(FakeAgent(f"h{i}", ["ok"]) for i in (1, 2, 3)), pool=False)
    fleet.ctx.store = store = RacingStore(fleet.db)
    taken: list[str] = []

    def rival(host: str) -> None:
        other = Store(fleet.db)
        other.reserve_vm("web-0", host, SHAPE, "", "g", host)
        other.close()
        taken.append(host)

    store.rival = rival
    doc = fleet.create("web-1", Ask(SHAPE, ha_group="g"))
    [lost] = taken
    assert doc["host"] != lost and fleet.asked() == [doc["host"]]
    assert fleet.agents[lost].vm_creates() == []   # never asked: the claim failed first
    assert sorted(store.ha_members("g")) == sorted([("web-0", lost, lost),
                                                    ("web-1", doc["host"], doc["host"])])
    assert fleet.row() == (doc["host"], "running")
    store.close()


def test_a_lost_reply_is_answered_by_vm_get(make: Callable[..., Fleet]) -> None:
    fleet = make(FakeAgent("h1", ["lost"]))
    doc = fleet.create()
    assert (doc["host"], doc["state"], doc["attempts"]) == ("h1", "running", 1)
    assert [m for m, _ in fleet.agents["h1"].calls][-2:] == ["vm.create", "vm.get"]
    assert fleet.row() == ("h1", "running")
    assert fleet.addresses() == [("10.0.0.1", "web-1")]


def test_a_lost_reply_and_no_answer_after_is_outcome_unknown(
        make: Callable[..., Fleet]) -> None:
    fleet = make(FakeAgent("h1", ["lost"], gets="drop"), FakeAgent("h2", ["ok"]))
    with pytest.raises(OutcomeUnknown) as caught:
        fleet.create()
    host = fleet.asked()[0]
    assert fleet.asked() == [host]   # never tried elsewhere: it may exist on the first
    assert caught.value.code == "OUTCOME_UNKNOWN" and caught.value.host == host
    assert "whether web-1 was created is unknown" in caught.value.message
    # The name and the address stay with the VM that may exist.
    assert fleet.row() == (host, "unknown")
    assert fleet.addresses() == [("10.0.0.1", "web-1")]
    with pytest.raises(AlreadyExists):
        fleet.create()


def test_interrupted_while_the_agent_builds_keeps_the_claim(
        make: Callable[..., Fleet]) -> None:
    fleet = make(FakeAgent("h1", ["interrupt"]))
    with pytest.raises(KeyboardInterrupt):
        fleet.create()
    assert fleet.row() == ("h1", "unknown")
    assert fleet.addresses() == [("10.0.0.1", "web-1")]


# -- fresh snapshots: `vm create` asks only the hosts whose stored view is not fresh ------

def _stored(fleet: Fleet, ages: dict[str, float]) -> None:
    """Snapshots in the store as `ppec serve` (or `ppec sync`) leaves them, ``age`` s old."""
    for host, age in ages.items():
        fleet.store.save_snapshot(host, time.time() - age, empty_host(time.time() - age))


def _calls(fleet: Fleet, method: str) -> dict[str, int]:
    return {name: a.count(method) for name, a in fleet.agents.items()}


def test_fresh_snapshots_mean_only_the_chosen_host_is_asked(
        make: Callable[..., Fleet]) -> None:
    fleet = make(*(FakeAgent(f"h{i}", ["ok"]) for i in (1, 2, 3)),
                 config='[placement]\nfresh_for = "60s"\n')
    _stored(fleet, {"h1": 1, "h2": 1, "h3": 1})
    doc = fleet.create()
    assert _calls(fleet, "host.snapshot") == {"h1": 0, "h2": 0, "h3": 0}
    assert _calls(fleet, "vm.create") == {h: int(h == doc["host"]) for h in ("h1", "h2", "h3")}
    # Nothing else either: the other agents were not even connected to.
    assert [len(a.calls) for n, a in fleet.agents.items() if n != doc["host"]] == [0, 0]
    assert fleet.row() == (doc["host"], "running")


def test_only_the_host_with_a_stale_snapshot_is_asked_for_one(
        make: Callable[..., Fleet]) -> None:
    fleet = make(*(FakeAgent(f"h{i}", ["ok", "ok"]) for i in (1, 2, 3)),
                 config="[placement]\nfresh_for = 30\n")
    _stored(fleet, {"h1": 1, "h2": 120, "h3": 1})
    first = fleet.create()["host"]
    assert _calls(fleet, "host.snapshot") == {"h1": 0, "h2": 1, "h3": 0}
    assert sum(_calls(fleet, "vm.create").values()) == 1
    # h2's answer was stored, so it is fresh now; the host that took web-1 is not: its
    # snapshot predates the VM the store records there, so it alone is asked again.
    fleet.create("web-2")
    assert _calls(fleet, "host.snapshot") == {h: int(h == "h2") + int(h == first)
                                              for h in ("h1", "h2", "h3")}


def test_missing_snapshots_and_hosts_the_service_marks_failed_are_asked(
        make: Callable[..., Fleet]) -> None:
    from ppec.operator.store import fleetstate
    fleet = make(*(FakeAgent(f"h{i}", ["ok"]) for i in (1, 2, 3)),
                 config="[placement]\nfresh_for = 30\n")
    _stored(fleet, {"h1": 1, "h2": 1})     # h3: none yet
    fleetstate.record_round(fleet.store, [], [fleetstate.Failure("h1", "UNREACHABLE", "x")],
                            time.time())
    fleet.create()
    assert _calls(fleet, "host.snapshot") == {"h1": 1, "h2": 0, "h3": 1}


def test_fresh_for_zero_asks_every_host(make: Callable[..., Fleet]) -> None:
    fleet = make(*(FakeAgent(f"h{i}", ["ok"]) for i in (1, 2, 3)),
                 config="[placement]\nfresh_for = 0\n")
    _stored(fleet, {"h1": 0, "h2": 0, "h3": 0})
    fleet.create()
    assert _calls(fleet, "host.snapshot") == {"h1": 1, "h2": 1, "h3": 1}


def test_a_fresh_but_wrong_snapshot_is_refused_late_and_the_next_host_tried(
        make: Callable[..., Fleet]) -> None:
    # The store says all three are empty; whichever placement ranks first has filled
    # meanwhile, and its agent refuses under its lock.
    fleet = make(*(FakeAgent(f"h{i}", ["full-if-first"]) for i in (1, 2, 3)),
                 config="[placement]\nfresh_for = 60\n")
    _stored(fleet, {"h1": 1, "h2": 1, "h3": 1})
    doc = fleet.create()
    refused, took = fleet.asked()
    assert refused != took == doc["host"] and doc["attempts"] == 2
    assert _calls(fleet, "host.snapshot") == {"h1": 0, "h2": 0, "h3": 0}
    assert fleet.row() == (took, "running") and fleet.addresses() == [("10.0.0.1", "web-1")]


@pytest.mark.parametrize("value", ['"soon"', "-1", '"5 parsecs"', "true"])
def test_a_bad_fresh_for_is_a_clear_config_error(tmp_path: Path, value: str) -> None:
    from ppec.core.errors import BadInput
    path = tmp_path / "config.toml"
    path.write_text(f"[placement]\nfresh_for = {value}\n")
    with pytest.raises(BadInput, match=r"invalid \[placement\] fresh_for") as caught:
        ppec_config.load(path)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(("value", "seconds"), [('"5s"', 5.0), ("2", 2.0), ('"500ms"', 0.5),
                                                ('"2m"', 120.0), ("0", 0.0)])
def test_fresh_for_spellings(tmp_path: Path, value: str, seconds: float) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[placement]\nfresh_for = {value}\n")
    assert ppec_config.load(path).fresh_for == seconds
