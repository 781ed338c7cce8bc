"""`ppec vm stats` / `ppec host top` against real agents on libvirt's test driver: exit
codes and messages for bad input, dead agents and partial answers; the wire method's
checks over the agent's real socket. (Figures from real guests: test_vmstats_guest.py.)"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.realparts import Agent, Cli


@pytest.fixture
def fleet(cli: Cli, test_agent: Agent) -> Cli:
    cli.ok("host", "add", "t1", "--address", "local", "--socket", str(test_agent.socket))
    cli.ok("vm", "create", "web-1", "--flavor", "tiny")
    return cli


def _error(stderr: str) -> dict[str, Any]:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return dict(json.loads(lines[0])["error"])


def test_stats_of_a_vm_on_the_test_driver(fleet: Cli) -> None:
    doc = json.loads(fleet.ok("vm", "stats", "web-1", "--interval", "0.3", "-o",
                              "json").stdout)
    assert doc["errors"] == []
    [vm] = doc["vms"]
    # The test driver gives the state only: the vCPU count comes from the domain, every
    # rate is null (documented: a figure libvirt does not give is null, never 0).
    assert (vm["name"], vm["host"], vm["state"], vm["vcpus"]) == ("web-1", "t1", "running", 1)
    assert vm["cpu_percent"] is None and vm["block"] == [] and vm["net"] == []
    table = fleet.ok("vm", "stats", "web-1", "--interval", "0.3").stdout.splitlines()
    header = next(ln for ln in table if ln.startswith("NAME"))
    assert header.split()[:6] == ["NAME", "HOST", "STATE", "vCPUS", "CPU%", "CPU%"]
    assert any(ln.split()[:3] == ["web-1", "t1", "running"] for ln in table)


@pytest.mark.parametrize(("args", "words"), [
    (["vm", "stats", "nope"], "unknown VM 'nope'"),
    (["vm", "stats", "web-1", "nope"], "unknown VM 'nope'"),
    (["vm", "stats", "Bad_Name"], "invalid VM name 'Bad_Name'"),
    (["vm", "stats", "web-1", "--host", "zz"], "unknown host"),
    (["host", "top", "zz"], "unknown host"),
])
def test_bad_input_exits_2_before_asking_any_agent(fleet: Cli, args: list[str],
                                                   words: str) -> None:
    done = fleet.run(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == "" and words in done.stderr
    assert done.stderr.count("\n") == 1
    err = _error(fleet.run(*args, "-o", "json").stderr)
    assert err["code"] in ("NOT_FOUND", "BAD_NAME", "BAD_INPUT"), err


@pytest.mark.parametrize("args", [
    ["vm", "stats"], ["vm", "stats", "web-1", "--interval", "0.1"],
    ["vm", "stats", "web-1", "--watch", "0"], ["host", "top", "t1", "--count", "0"],
])
def test_bad_usage_exits_2(fleet: Cli, args: list[str]) -> None:
    assert fleet.run(*args).returncode == 2


def test_csv_is_refused(fleet: Cli) -> None:
    done = fleet.run("vm", "stats", "web-1", "-o", "csv")
    assert done.returncode == 2 and "-o csv is not offered" in done.stderr


def test_a_vm_on_a_dead_agent_exits_1(fleet: Cli, test_agent: Agent) -> None:
    test_agent.kill()
    done = fleet.run("vm", "stats", "web-1")
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("ppec: error: t1: agent not running")
    assert _error(fleet.run("vm", "stats", "web-1", "-o", "json").stderr)["code"] \
        == "AGENT_UNREACHABLE"
    done = fleet.run("host", "top", "t1", "-o", "json")
    assert done.returncode == 1 and done.stdout == ""


def test_one_dead_host_of_two_is_exit_5_with_the_others_figures(cli: Cli,
                                                                 tmp_path: Path) -> None:
    a = Agent(tmp_path / "a", host="a").start()
    b = Agent(tmp_path / "b", host="b").start()
    try:
        for agent in (a, b):
            cli.ok("host", "add", agent.host, "--address", "local", "--socket",
                   str(agent.socket))
            cli.ok("vm", "create", f"vm-{agent.host}", "--flavor", "tiny", "--host",
                   agent.host)
        b.kill()
        done = cli.run("vm", "stats", "vm-a", "vm-b", "--interval", "0.3", "-o", "json")
        assert done.returncode == 5, done.stderr
        doc = json.loads(done.stdout)
        assert [v["name"] for v in doc["vms"]] == ["vm-a"]
        assert [(e["host"], e["code"]) for e in doc["errors"]] == [("b", "AGENT_UNREACHABLE")]
        assert _error(done.stderr)["message"].startswith("b: agent not running")
    finally:
        a.kill()
        b.kill()


def _call(agent: Agent, params: dict[str, Any]) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(agent.socket))
        s.sendall(json.dumps({"v": 1, "id": 1, "method": "vm.stats",
                              "params": params}).encode() + b"\n")
        return dict(json.loads(s.makefile("rb").readline()))


def test_the_wire_method_checks_its_names(fleet: Cli, test_agent: Agent) -> None:
    every = _call(test_agent, {})
    assert every["ok"] and [v["name"] for v in every["result"]["vms"]] == ["web-1"]
    assert _call(test_agent, {"names": ["web-1"]})["result"]["vms"][0]["state"] == "running"
    # "test" is the driver's own domain: not this agent's, so not found, like any other.
    for names, code in ((["nope"], "NOT_FOUND"), (["test"], "NOT_FOUND"),
                        (["Bad_Name"], "BAD_NAME"), ("web-1", "BAD_PARAMS"),
                        ([1], "BAD_PARAMS")):
        reply = _call(test_agent, {"names": names})
        assert not reply["ok"] and reply["error"]["code"] == code, (names, reply)


def test_a_shut_off_vm_has_no_rates_and_says_so(fleet: Cli) -> None:
    fleet.ok("vm", "stop", "web-1", "--force")
    doc = json.loads(fleet.ok("vm", "stats", "web-1", "--interval", "0.3", "-o",
                              "json").stdout)
    [vm] = doc["vms"]
    assert vm["state"] == "shut-off" and vm["cpu_percent"] is None and vm["vcpus"] == 1


def _on_a_terminal(cli: Cli, *args: str) -> str:
    """Run ppec with its stdout on a pty (a terminal to rich), return what it drew."""
    import os
    import subprocess

    from tests.realparts import PPEC
    leader, follower = os.openpty()
    env = {**cli.env, "TERM": "xterm-256color"}
    proc = subprocess.Popen([PPEC, *args], stdin=subprocess.DEVNULL, stdout=follower,
                            stderr=subprocess.PIPE, env=env)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:   # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    os.close(leader)
    return out.decode(errors="replace")


def test_host_top_refreshes_in_place_on_a_terminal(fleet: Cli) -> None:
    drawn = _on_a_terminal(fleet, "host", "top", "t1", "--interval", "0.3", "--count", "3")
    # rich Live redraws over the previous frame: cursor up and erase line, not new lines.
    assert "\x1b[1A" in drawn and "\x1b[2K" in drawn, repr(drawn[-500:])
    assert drawn.count("web-1") >= 3
    watched = _on_a_terminal(fleet, "vm", "stats", "web-1", "--watch", "0.3", "--count", "2")
    assert "\x1b[1A" in watched and watched.count("web-1") >= 2


def test_watch_off_a_terminal_prints_a_table_or_a_json_line_per_sample(fleet: Cli) -> None:
    out = fleet.ok("vm", "stats", "web-1", "--watch", "0.3", "--count", "2").stdout
    assert "\x1b[" not in out
    assert sum(1 for ln in out.splitlines() if ln.startswith("NAME")) == 2
    lines = fleet.ok("host", "top", "t1", "--interval", "0.3", "--count", "3", "-o",
                     "json").stdout.splitlines()
    assert [json.loads(ln)["vms"][0]["name"] for ln in lines] == ["web-1"] * 3
    one = fleet.ok("host", "top", "t1", "--interval", "0.3", "-o", "json").stdout
    assert json.loads(one)["vms"][0]["name"] == "web-1"    # one indented document


def test_a_snapshot_of_a_host_that_counts_nothing_measures_nothing(fleet: Cli,
                                                                   test_agent: Agent) -> None:
    """The test driver gives no CPU counter: the snapshot's totals are null, not 0 (not
    measured is not idle), and capacity shows no figure for the host."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(test_agent.socket))
        s.sendall(b'{"v":1,"id":1,"method":"host.snapshot","params":{}}\n')
        use = json.loads(s.makefile("rb").readline())["result"]["vm_use"]
    assert (use["cpu_used"], use["rss_mib"]) == (None, None)
    assert use["vms"]["web-1"]["cpu_percent"] is None
    fleet.ok("sync")
    group = json.loads(fleet.ok("capacity", "-o", "json").stdout)["groups"][0]
    assert (group["vm_use_hosts"], group["vm_cpu_used"]) == (0, None)
