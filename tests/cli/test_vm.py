"""``ppec vm`` against a real agent on libvirt's test driver: exit codes, output, leftovers."""

from __future__ import annotations

import json

import pytest

from tests.realparts import Agent, Cli, next_second, vm_files


@pytest.fixture
def fleet(cli: Cli, test_agent: Agent) -> Cli:
    cli.ok("host", "add", "t1", "--address", "local", "--socket", str(test_agent.socket))
    return cli


def _nothing_left(cli: Cli, agent: Agent, before: set[str]) -> None:
    assert cli.store_vms() == sorted(before)
    assert {n for n in agent.ledger_rows()} == before
    assert agent.volumes() == vm_files(*before)


def test_create_list_show_stop_start_delete(fleet: Cli, test_agent: Agent) -> None:
    done = fleet.ok("vm", "create", "web-1", "--cpus", "2", "--memory", "512M", "--disk", "2G",
                    "-o", "json")
    vm = json.loads(done.stdout)
    assert (vm["name"], vm["host"], vm["state"], vm["vcpus"], vm["memory_mib"]) == (
        "web-1", "t1", "running", 2, 512)
    assert test_agent.ledger_rows() == {"web-1": ("present", str(test_agent.storage /
                                                                 "web-1.qcow2"))}
    listed = json.loads(fleet.ok("vm", "list", "-o", "json").stdout)
    assert [(v["name"], v["host"], v["state"]) for v in listed["vms"]] == [
        ("web-1", "t1", "running")]
    assert listed["errors"] == []
    table = fleet.ok("vm", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "HOST", "STATE", "CPUS", "MEMORY", "DISK", "ADDRESS"]
    assert table[1].split() == ["web-1", "t1", "running", "2", "512M", "2G", "-"]
    assert fleet.ok("vm", "list", "-o", "csv").stdout.splitlines() == [
        "name,host,state,vcpus,memory,disk,address", "web-1,t1,running,2,512M,2G,-"]
    assert json.loads(fleet.ok("vm", "stop", "web-1", "--force", "-o", "json").stdout)[
        "state"] == "shut-off"
    assert json.loads(fleet.ok("vm", "start", "web-1", "-o", "json").stdout)[
        "state"] == "running"
    assert json.loads(fleet.ok("vm", "show", "web-1", "-o", "json").stdout)["vcpus"] == 2
    fleet.ok("vm", "delete", "web-1")
    _nothing_left(fleet, test_agent, set())
    assert json.loads(fleet.ok("vm", "list", "-o", "json").stdout)["vms"] == []


def test_flavor_and_overrides(fleet: Cli) -> None:
    vm = json.loads(fleet.ok("vm", "create", "f1", "--flavor", "tiny", "--cpus", "3",
                             "-o", "json").stdout)
    assert (vm["vcpus"], vm["memory_mib"], vm["disk_bytes"]) == (3, 256, 1 << 30)


@pytest.mark.parametrize(("args", "code", "words"), [
    (["vm", "create", "Bad_Name", "--flavor", "tiny"], 2, "invalid VM name 'Bad_Name'"),
    (["vm", "create", "a1", "--cpus", "1", "--memory", "12Q", "--disk", "1G"], 2,
     "invalid memory '12Q'"),
    (["vm", "create", "a1", "--cpus", "1", "--memory", "1G", "--disk", "1.5G"], 2,
     "invalid disk size '1.5G'"),
    (["vm", "create", "a1", "--cpus", "1"], 2, "give --flavor, or all of"),
    (["vm", "create", "a1", "--flavor", "huge"], 2, "unknown flavor 'huge'"),
    (["vm", "create", "a1", "--flavor", "tiny", "--host", "nope"], 2, "unknown host 'nope'"),
    (["vm", "create", "a1", "--flavor", "tiny", "--host", "t1", "--region", "r"], 2,
     "contradict"),
    (["vm", "create", "a1", "--cpus", "1", "--memory", "100G", "--disk", "1G"], 3,
     "t1: 65536 MiB memory free, needs 102400 MiB"),
    (["vm", "create", "a1", "--flavor", "tiny", "--region", "eu"], 2,
     "unknown region 'eu'; regions in the inventory: none"),
    (["vm", "create", "a1", "--cpus", "17", "--memory", "1G", "--disk", "1G"], 3,
     "t1: 16 CPUs not dedicated, needs 17"),
    (["vm", "create", "a1", "--cpus", "9", "--memory", "1G", "--disk", "1G", "--numa",
      "dedicated", "--numa-nodes", "1", "--threads", "require"], 3,
     "t1: NUMA: node 0 has no SMT sibling threads (threads require)"),
    (["vm", "create", "a1", "--flavor", "tiny", "--ha-group", "web tier"], 2,
     "invalid HA group name 'web tier'"),
    (["vm", "create", "a1", "--flavor", "tiny", "--spread", "rack"], 2,
     "--spread applies to an HA group"),
    (["vm", "create", "a1", "--flavor", "tiny", "--threads", "isolate"], 2,
     "they need --numa dedicated"),
    (["vm", "create", "a1", "--flavor", "tiny", "--vrf", "blue"], 2, "unknown VRF 'blue'"),
    (["vm", "delete", "ghost"], 2, "unknown VM 'ghost'"),
    (["vm", "show", "ghost", "--host", "t1"], 2, "no VM named ghost on t1"),
    (["vm", "list", "--host", "nope"], 2, "unknown host 'nope'"),
    (["vm", "create", "a1", "--flavor", "tiny", "-o", "yaml"], 2, "Invalid value"),
])
def test_bad_input(fleet: Cli, test_agent: Agent, args: list[str], code: int,
                   words: str) -> None:
    done = fleet.run(*args)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert words in done.stderr
    assert "Traceback" not in done.stderr
    if code != 2 or "Invalid value" not in words:
        assert done.stdout == ""
    _nothing_left(fleet, test_agent, set())


def test_errors_are_one_json_line_with_o_json(fleet: Cli) -> None:
    done = fleet.run("vm", "create", "a1", "--cpus", "1", "--memory", "12Q", "--disk", "1G",
                     "-o", "json")
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["error"]["code"] == "BAD_SIZE"


def test_duplicate_name_is_refused_and_the_first_vm_is_untouched(fleet: Cli,
                                                                 test_agent: Agent) -> None:
    fleet.ok("vm", "create", "dup", "--flavor", "tiny")
    done = fleet.run("vm", "create", "dup", "--flavor", "tiny")
    assert done.returncode == 2
    assert "a VM named dup already exists on host t1" in done.stderr
    _nothing_left(fleet, test_agent, {"dup"})
    assert json.loads(fleet.ok("vm", "show", "dup", "-o", "json").stdout)["state"] == "running"


def test_duplicate_on_the_host_but_not_in_the_store(fleet: Cli, test_agent: Agent,
                                                    tmp_path: object) -> None:
    """The agent's own check holds even when the operator store does not know the VM."""
    fleet.ok("vm", "create", "twin", "--flavor", "tiny")
    other = Cli(fleet.db.parent.parent.parent / "other-operator")
    other.ok("host", "add", "t1", "--address", "local", "--socket", str(test_agent.socket))
    done = other.run("vm", "create", "twin", "--flavor", "tiny")
    assert done.returncode == 2
    assert "a domain named twin already exists on t1" in done.stderr
    assert other.store_vms() == []
    _nothing_left(fleet, test_agent, {"twin"})


def test_agent_not_running(fleet: Cli, test_agent: Agent) -> None:
    test_agent.kill()
    done = fleet.run("vm", "create", "a1", "--flavor", "tiny", "--host", "t1")
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("ppec: error: t1: agent not running: nothing listens on")
    done = fleet.run("vm", "create", "a1", "--flavor", "tiny")
    assert done.returncode == 3, done.stderr
    assert "no host can take a1: t1: unreachable: agent not running" in done.stderr
    done = fleet.run("vm", "list")
    assert done.returncode == 1 and "t1: agent not running" in done.stderr
    done = fleet.run("agent", "status", "-o", "json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["agents"][0]["ok"] is False
    assert fleet.store_vms() == []


def test_drained_host_takes_nothing(fleet: Cli, test_agent: Agent) -> None:
    fleet.ok("host", "drain", "t1")
    done = fleet.run("vm", "create", "a1", "--flavor", "tiny")
    assert done.returncode == 3 and "t1: drained" in done.stderr
    fleet.ok("host", "undrain", "t1")
    fleet.ok("vm", "create", "a1", "--flavor", "tiny")


def test_dry_run_builds_nothing(fleet: Cli, test_agent: Agent) -> None:
    doc = json.loads(fleet.ok("vm", "create", "a1", "--flavor", "tiny", "--dry-run",
                              "-o", "json").stdout)
    assert doc["host"] == "t1" and doc["ranked"] == ["t1"]
    _nothing_left(fleet, test_agent, set())


def test_host_remove_refused_while_vms_exist(fleet: Cli) -> None:
    fleet.ok("vm", "create", "a1", "--flavor", "tiny")
    done = fleet.run("host", "remove", "t1")
    assert done.returncode == 2 and "still has 1 VM" in done.stderr
    fleet.ok("vm", "delete", "a1")
    fleet.ok("host", "remove", "t1")
    assert json.loads(fleet.ok("host", "list", "-o", "json").stdout)["hosts"] == []


def test_a_host_freed_by_a_delete_takes_a_vm_at_once(fleet: Cli) -> None:
    """A stored snapshot still fresh (as `ppec serve` keeps them) that counts a VM deleted
    since must not make a create on the freed host refuse: the delete marks the host
    changed, so its snapshot is asked again."""
    fleet.configure('[placement]\nfresh_for = "10m"\n')
    big = ("--cpus", "1", "--memory", "60G", "--disk", "1G")
    fleet.ok("vm", "create", "big-1", *big)
    next_second()
    fleet.ok("sync")                  # a snapshot newer than the create: it counts big-1
    assert fleet.run("vm", "create", "big-2", *big).returncode == 3   # full, rightly
    next_second()
    fleet.ok("vm", "delete", "big-1")
    vm = json.loads(fleet.ok("vm", "create", "big-2", *big, "-o", "json").stdout)
    assert (vm["host"], vm["state"]) == ("t1", "running")


def test_pack_fills_the_busy_host_and_spread_the_empty_one(cli: Cli, tmp_path: object) -> None:
    from pathlib import Path
    base = Path(str(tmp_path))
    a = Agent(base / "a", host="a").start()
    b = Agent(base / "b", host="b").start()
    try:
        cli.ok("host", "add", "a", "--address", "local", "--socket", str(a.socket))
        cli.ok("host", "add", "b", "--address", "local", "--socket", str(b.socket))
        cli.ok("vm", "create", "big", "--cpus", "1", "--memory", "8G", "--disk", "1G",
               "--host", "a")
        hosts = [json.loads(cli.ok("vm", "create", f"s{i}", "--flavor", "tiny", "-o",
                                   "json").stdout)["host"] for i in range(2)]
        assert hosts == ["a", "a"]   # the default policy packs: no idle host woken
        config = base / "spread.toml"
        config.write_text('[placement]\nstrategy = "spread"\n[placement.weights]\npower = 0\n')
        cli.env["PPEC_CONFIG"] = str(config)
        hosts = [json.loads(cli.ok("vm", "create", f"t{i}", "--flavor", "tiny", "-o",
                                   "json").stdout)["host"] for i in range(2)]
        assert hosts == ["b", "b"]
    finally:
        a.kill()
        b.kill()
