"""`ppec vm stats` and `ppec host top` on real libvirtd + QEMU guests that really boot.

A busy guest spins in its init (`ppec.busy=2`, on its 2 vCPUs); the idle guest is the
same kernel whose PID 1 only sleeps (`rdinit=/bin/busybox -- sleep …`): the test guest's
usual init polls /sys every 0.2 s, which alone costs about 10% of a vCPU under TCG. A
third guest writes to a hot-plugged disk (`ppec.write=vdb`). Figures are checked against
what ppec does not compute: QEMU's CPU time and RSS in /proc, and `virsh domblkstat`.
The host snapshot's rates are since the agent's previous snapshot: the first `ppec
sync` after the VMs were created finds the newest VM without a baseline (null, never a
wait), the second has rates for all.
"""

from __future__ import annotations

import json
import os
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from tests.realparts import Agent, Cli, qemu_pid, unique, virsh, wait_until

TICK = os.sysconf("SC_CLK_TCK")
IDLE_INIT = "rdinit=/bin/busybox -- sleep 1000000"


@pytest.fixture
def gcli(cli: Cli, guest_agent: Agent) -> Cli:
    cli.ok("host", "add", "g", "--address", "local", "--socket", str(guest_agent.socket))
    return cli


def boot(cli: Cli, guest: Path, name: str, words: str, cpus: int = 1) -> None:
    cli.ok("vm", "create", name, "--cpus", str(cpus), "--memory", "256M", "--disk", "64M",
           "--kernel", str(guest / "vmlinuz"), "--initrd", str(guest / "initrd.img"),
           "--cmdline", f"console=ttyS0 panic=-1 {words}")


def booted(agent: Agent, name: str, line: str) -> None:
    wait_until(lambda: line in agent.console(name).text(), 180, f"{name} shows {line!r}")


def favour(name: str) -> None:
    """The highest CPU weight libvirt gives a domain's cgroup (its <cputune><shares>)."""
    virsh("schedinfo", name, "--live", "cpu_shares=262144")


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK      # utime + stime


def proc_rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


def stats(cli: Cli, *args: str) -> dict[str, dict[str, Any]]:
    doc = json.loads(cli.ok("vm", "stats", *args, "-o", "json").stdout)
    assert doc["errors"] == []
    return {v["name"]: v for v in doc["vms"]}


def test_busy_guest_above_half_a_vcpu_idle_below_ten_percent(
        gcli: Cli, guest_agent: Agent, guest: Path) -> None:
    busy, idle = unique("busy"), unique("idle")
    boot(gcli, guest, busy, "quiet ppec.busy=2", cpus=2)
    boot(gcli, guest, idle, IDLE_INIT)
    booted(guest_agent, busy, "PPEC-GUEST-UP")
    booted(guest_agent, idle, "Run /bin/busybox as init process")
    time.sleep(2)   # the idle kernel's last boot work (clocksource switch) done
    pids = {n: qemu_pid(n) for n in (busy, idle)}
    assert all(pids.values()), pids
    # On this 2-core machine shared with other work (load 6 to 16 seen, dozens of other
    # guests in libvirt's machine cgroup, each with an equal CPU weight) the busy guest got
    # 17-47% of a CPU, the rest reported as steal: true, but not busy. The test raises its
    # weight with libvirt's own knob so that it can be busy.
    favour(busy)
    cpu0 = {n: proc_cpu_s(p) for n, p in pids.items() if p}
    t0 = time.monotonic()
    seen = stats(gcli, busy, idle, "--interval", "3")
    wall = time.monotonic() - t0
    by_proc = {n: (proc_cpu_s(p) - cpu0[n]) / wall * 100 for n, p in pids.items() if p}

    assert seen[busy]["cpu_percent"] > 50, (seen[busy], by_proc, os.getloadavg())
    assert seen[idle]["cpu_percent"] < 10, (seen[idle], by_proc)
    # Independently, /proc's CPU time of the same QEMU processes over a window holding
    # the CLI's: the same verdict, and figures close to each other.
    # (The windows differ by the CLI's start-up; the host's load may change within it: on
    # the 2-core CI machine the busy guest had 191% over /proc's window and 156% over the
    # CLI's 3 s, whose start-up took a core from it. So the bound is a fifth of what the
    # guest's vCPUs can use: 40 points for 2 vCPUs, still far from the busy/idle verdict.)
    assert by_proc[idle] < 10, by_proc
    for name, vcpus in ((busy, 2), (idle, 1)):
        assert abs(seen[name]["cpu_percent"] - by_proc[name]) < 20 * vcpus, (name, seen, by_proc)
        v = seen[name]
        assert (v["state"], v["vcpus"], v["interval_s"] > 2.5) == ("running", vcpus, True)
        assert abs(v["cpu_percent_of_vcpus"] - v["cpu_percent"] / vcpus) <= 0.1
        assert v["memory_mib"] == 256
        pid = pids[name]
        assert pid is not None and abs(v["rss_mib"] - proc_rss_mib(pid)) < 32, v
        assert v["steal_percent"] is not None and v["vcpu_percent"] is not None

    # host top: every VM of the host, busiest first; -o json is one sample.
    top = json.loads(gcli.ok("host", "top", "g", "--interval", "2", "-o", "json").stdout)
    assert [v["name"] for v in top["vms"]] == [busy, idle], top
    assert top["vms"][0]["host"] == "g"
    table = gcli.ok("host", "top", "g", "--interval", "1").stdout.splitlines()
    rows = [ln.split() for ln in table if ln.split() and ln.split()[0] in (busy, idle)]
    assert [r[0] for r in rows] == [busy, idle] and rows[0][2] == "running"

    # The host snapshot carries the same use (rates since the agent's previous sample),
    # and `ppec capacity` reports it beside what the VMs hold. The first sync sets the
    # newest VM's baseline (its rate is null: not measured, and the snapshot did not wait).
    gcli.ok("sync", "g")
    time.sleep(2)
    gcli.ok("sync", "g")
    export = guest_agent.root.parent / "fleet.json"
    gcli.ok("host", "export-snapshot", str(export))
    [entry] = json.loads(export.read_text())["hosts"]
    use = entry["snapshot"]["vm_use"]
    assert use["vms"][busy]["cpu_percent"] > 50, use
    assert use["vms"][idle]["cpu_percent"] < 10, use
    assert use["cpu_used"] > 0.5 and use["rss_mib"] > 0
    cap = json.loads(gcli.ok("capacity", "-o", "json").stdout)["groups"][0]
    assert cap["group"] == "g" and cap["vm_cpu_used"] > 0.5 and cap["vm_rss_mib"] > 0, cap

    # --watch with -o json: one JSON line per sample, each over the watch interval.
    done = gcli.ok("vm", "stats", busy, "--watch", "1", "--count", "2", "-o", "json")
    lines = [json.loads(ln) for ln in done.stdout.splitlines()]
    assert len(lines) == 2
    assert all(ln["vms"][0]["cpu_percent"] > 50 for ln in lines), lines
    assert all(ln["vms"][0]["interval_s"] >= 1 for ln in lines), lines


def test_block_writes_grow_after_the_guest_writes_to_a_hot_plugged_disk(
        gcli: Cli, guest_agent: Agent, guest: Path) -> None:
    vm = unique("wr")
    boot(gcli, guest, vm, "quiet ppec.write=vdb")
    booted(guest_agent, vm, "PPEC-GUEST-UP")
    before = stats(gcli, vm, "--interval", "1")[vm]
    # The root disk and the seed CD-ROM every VM gets.
    assert [d["name"] for d in before["block"]] == ["vda", "hdc"]
    assert before["block_write_bps"] == 0
    gcli.ok("disk", "attach", vm, "--size", "16M")
    booted(guest_agent, vm, "PPEC-WRITING vdb")
    # The guest's writes reach the disk at each dd's fsync, slower under TCG on a loaded
    # machine: wait until libvirt has counted the first, then watch several intervals.
    wait_until(lambda: virsh_written(vm) > 0, 180, "the guest's first write to vdb")
    done = gcli.ok("vm", "stats", vm, "--watch", "2", "--count", "4", "-o", "json")
    rows = [{d["name"]: d for d in json.loads(ln)["vms"][0]["block"]}["vdb"]
            for ln in done.stdout.splitlines()]
    assert len(rows) == 4
    assert max(r["write_bps"] for r in rows) > 0, rows
    assert rows[-1]["wr_bytes"] > rows[0]["wr_bytes"], rows      # it grows
    assert all(r["wr_bytes"] <= n["wr_bytes"] for r, n in pairwise(rows))
    assert virsh_written(vm) >= rows[-1]["wr_bytes"]    # libvirt's own count, read after
    whole = json.loads(done.stdout.splitlines()[-1])["vms"][0]
    assert whole["block_write_bytes"] >= rows[-1]["wr_bytes"]


def virsh_written(vm: str) -> int:
    out = virsh("domblkstat", vm, "vdb", check=False)
    return int(out.split("wr_bytes")[1].split()[0]) if "wr_bytes" in out else 0
