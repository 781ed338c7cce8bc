"""30 update/rollback cycles on a host running real QEMU guests (the test guest, TCG):
the QEMU processes (read from /proc) never change, the agent keeps its PID (exec in
place), and it answers ping throughout except inside its own restarts."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import ppec
from ppec.wire import bundle as files
from ppec.wire import protocol
from tests.agent import syncparts as sp
from tests.agent.test_agent_sync import old_copy
from tests.agent.test_disks import boot
from tests.realparts import Agent, Cli, domain_state, qemu_pid, unique

CYCLES = 30


class Pinger:
    """ping every few ms on a fresh connection; keeps the times nothing answered."""

    def __init__(self, sock: Path) -> None:
        self.sock, self.misses, self.answered = sock, list[float](), 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def once(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(str(self.sock))
                s.sendall(protocol.encode(protocol.request(1, "ping", {})))
                return bool(json.loads(s.makefile("rb").readline())["ok"])
        except (OSError, ValueError):
            return False

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.monotonic()
            if self.once():
                self.answered += 1
            else:
                self.misses.append(t)
            time.sleep(0.01)


def test_thirty_update_rollback_cycles_leave_qemu_alone(cli: Cli, qemu_dir: Path,
                                                        guest: Path) -> None:
    site = old_copy(qemu_dir)
    agent = Agent(qemu_dir / "agent", host=unique("c"), libvirt_uri="qemu:///system",
                  env={"PYTHONPATH": str(site)},
                  extra={"cpu_overcommit": 12.0, "image_dir": str(guest),
                         "domain_type": "qemu"}).start()
    pinger = Pinger(agent.socket)
    try:
        cli.ok("host", "add", "c", "--address", "local", "--socket", str(agent.socket))
        vms = [unique("cy") for _ in range(2)]
        for vm in vms:
            boot(cli, agent, guest, vm)
        qemu = {vm: qemu_pid(vm) for vm in vms}
        assert all(qemu.values())
        assert agent.proc is not None
        pid = agent.proc.pid
        old, new = sp.manifest(agent)["digest"], files.digest(
            ppec.__version__, files.manifest(files.package_root()))
        windows: list[tuple[float, float]] = []
        pinger.thread.start()
        for cycle in range(CYCLES):
            for args, want in ((("agent", "sync", "-o", "json"), new),
                               (("agent", "rollback", "-o", "json"), old)):
                t0 = time.monotonic()
                done = cli.run(*args)
                windows.append((t0, time.monotonic()))
                assert done.returncode == 0, (cycle, args, done.stdout, done.stderr)
                now = sp.manifest(agent)
                assert (now["digest"], now["pid"]) == (want, pid), (cycle, args)
                assert {vm: qemu_pid(vm) for vm in vms} == qemu, (cycle, args)
                assert all(domain_state(vm) == "running" for vm in vms)
        pinger.stop.set()
        pinger.thread.join()
        # Every unanswered ping fell inside an update or rollback the test was running.
        outside = [t for t in pinger.misses
                   if not any(a <= t <= b for a, b in windows)]
        assert outside == [], outside
        assert pinger.answered > CYCLES * 2
        # Only the running and the previous release are kept.
        assert set(sp.accepted(agent)) == {old, new}
        listed = json.loads(cli.ok("vm", "list", "-o", "json").stdout)["vms"]
        assert sorted((v["name"], v["state"]) for v in listed) == sorted(
            (vm, "running") for vm in vms)
        for vm in vms:
            cli.ok("vm", "delete", vm)
    finally:
        pinger.stop.set()
        sp.stop(agent)
