"""The simulated agents cannot drift from the real one: the same read methods, the same
answer shapes (keys and value types, nested), checked against a real agent on libvirt's
test driver with a dedicated VM, a shared VM and an open alert."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from ppec.operator.fleet.client import AgentClient, Reach
from ppec.operator.store import Host
from ppec.wire.methods import METHODS
from tests.realparts import Agent
from tests.sim.fleet import ANSWERED, SimFleet, SimSettings

# drift.check runs under the host lock (it writes the agent's alert list) but reads the host.
READS = sorted({m.name for m in METHODS.values()
                if (not m.mutating or m.name == "drift.check")
                and not any(p.required for p in m.params.values())})


# Objects whose keys are data (file names), not fields: compared by their values' shape.
MAPS = {"agent.manifest.files", "host.snapshot.vm_use.vms"}


def shape(value: Any, where: str = "") -> Any:
    """Keys and value types, recursively; lists by their first element."""
    if isinstance(value, dict):
        if where in MAPS:
            return {"*": shape(next(iter(value.values())), where)} if value else {}
        return {k: shape(v, f"{where}.{k}") for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0], where)] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def same_shape(real: Any, fake: Any, where: str = "") -> list[str]:
    """Where the shapes differ; an empty list on either side matches any list."""
    if isinstance(real, dict) and isinstance(fake, dict):
        out = [f"{where}.{k}: only in the real agent" for k in real.keys() - fake.keys()]
        out += [f"{where}.{k}: only in the simulation" for k in fake.keys() - real.keys()]
        for k in real.keys() & fake.keys():
            out += same_shape(real[k], fake[k], f"{where}.{k}")
        return out
    if isinstance(real, list) and isinstance(fake, list):
        return same_shape(real[0], fake[0], f"{where}[]") if real and fake else []
    return [] if real == fake else [f"{where}: real {real}, simulated {fake}"]


def test_every_read_method_of_the_table_is_simulated() -> None:
    assert READS, "the method table has no read methods?"
    missing = sorted(set(READS) - ANSWERED)
    assert missing == [], f"the simulated agent does not answer {missing}: add them to " \
                          f"tests/sim/fleet.py host_answers"


def test_answers_have_the_real_agents_shape(tmp_path: Path) -> None:
    agent = Agent(tmp_path / "agent", host="t1").start()
    short = Path(tempfile.mkdtemp(prefix="ppec-sim-"))
    try:
        client = AgentClient(Host("t1", "local", socket=str(agent.socket)),
                             Reach(known_hosts=tmp_path / "known_hosts"))
        for name, numa in (("ded", "dedicated"), ("sha", "shared")):
            client.call("vm.create", name=name, vcpus=2, memory_mib=256, disk_bytes=1 << 20,
                        numa=numa)
        client.call("vm.stop", name="sha", force=True)
        client.call("drift.check")   # a clean host; alerts come from the ledger below
        real = {m: client.call(m) for m in READS}
        client.close()
        real["drift.check"]["alerts"] = [dict.fromkeys(
            ("code", "object", "detail", "first_seen", "last_seen"), "")]
        settings = SimSettings(3, short, drift_rate=1.0)
        with SimFleet(settings, parts=1):
            fake_client = AgentClient(Host("sim", "local", socket=str(settings.socket(0))),
                                      Reach(known_hosts=tmp_path / "known_hosts"))
            fake = {m: fake_client.call(m) for m in READS}
            fake_client.close()
    finally:
        agent.kill()
    problems = {m: same_shape(shape(real[m], m), shape(fake[m], m), m) for m in READS}
    assert {m: p for m, p in problems.items() if p} == {}
    assert fake["host.snapshot"]["vms"] and fake["drift.check"]["alerts"]


def test_failing_hosts_are_down_and_healthy_ones_answer(tmp_path: Path) -> None:
    settings = SimSettings(40, Path(tempfile.mkdtemp(prefix="ppec-sim-")), fail_rate=0.2)
    with SimFleet(settings, parts=2) as fleet:
        assert fleet.failing() and len(fleet.healthy()) + len(fleet.failing()) == 40
        for i in range(settings.count):
            client = AgentClient(Host(settings.name(i), "local",
                                      socket=str(settings.socket(i))),
                                 Reach(known_hosts=tmp_path / "kh", connect_timeout=2))
            if settings.failing(i):
                with pytest.raises(Exception, match="agent not running"):
                    client.call("ping")
            else:
                assert client.call("ping")["host"] == settings.name(i)
            client.close()
