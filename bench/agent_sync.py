#!/usr/bin/env python3
"""The agent's restart window during `ppec agent sync` / `ppec agent rollback` cycles on a
host running a real QEMU VM, against baselines measured in the same run.

A real agent on this machine's libvirtd (run as root) serves from a copy of ppec at an
older version; one VM runs (a QEMU process, watched in /proc). Each cycle updates the
agent to this checkout and rolls it back. A thread pings the agent's socket every few ms
(a fresh connection each time); the restart window of a command is the longest time
between two answered pings while it ran. Baselines: one ping round trip, and a plain
process start of `ppec-agent --help`, and a fresh `ppec-agent serve` from start to its
first answer (what a restart by a service manager would cost).

    .venv/bin/python bench/agent_sync.py [--cycles 10]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.agent.syncparts import call
from tests.agent.test_agent_sync import old_copy
from tests.realparts import AGENT, QEMU_SCRATCH, Agent, Cli, qemu_pid, qemu_reason, unique


class Pinger(threading.Thread):
    def __init__(self, sock: Path, every: float) -> None:
        super().__init__(daemon=True)
        self.sock, self.every = sock, every
        self.ok: list[float] = []        # completion times of answered pings
        self.rtt: list[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            t = time.perf_counter()
            try:
                if call(self.sock, "ping", timeout=5)["ok"]:
                    done = time.perf_counter()
                    self.ok.append(done)
                    self.rtt.append(done - t)
            except (OSError, ValueError):
                pass
            time.sleep(self.every)

    def window(self, a: float, b: float) -> float:
        """Longest time without an answer between ``a`` and ``b`` (answers bracket it)."""
        inside = [t for t in self.ok if a <= t <= b]
        before = [t for t in self.ok if t < a][-1:]
        after = [t for t in self.ok if t > b][:1]
        times = before + inside + after
        return max((y - x for x, y in itertools.pairwise(times)), default=0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--every", type=float, default=0.003, help="seconds between pings")
    args = ap.parse_args()
    reason = qemu_reason()
    if reason:
        sys.exit(f"real libvirtd + QEMU unavailable: {reason}")
    QEMU_SCRATCH.mkdir(mode=0o711, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench-agent-sync-", dir=QEMU_SCRATCH))
    root.chmod(0o711)
    site = old_copy(root)
    agent = Agent(root / "agent", host=unique("b"), libvirt_uri="qemu:///system",
                  env={"PYTHONPATH": str(site)}, extra={"domain_type": "qemu"}).start()
    cli = Cli(root / "operator")
    vm = unique("bvm")
    try:
        cli.ok("host", "add", "b", "--address", "local", "--socket", str(agent.socket))
        cli.ok("vm", "create", vm, "--cpus", "1", "--memory", "64M", "--disk", "16M")
        qemu = qemu_pid(vm)
        starts = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run([AGENT, "--help"], capture_output=True, check=True)
            starts.append(time.perf_counter() - t)
        fresh = []
        for i in range(3):   # a whole new agent process, start to first answer
            t = time.perf_counter()
            other = Agent(root / f"fresh{i}", host=f"f{i}").start()
            fresh.append(time.perf_counter() - t)
            other.kill()
        pinger = Pinger(agent.socket, args.every)
        pinger.start()
        time.sleep(0.5)
        rows = []
        for cycle in range(args.cycles):
            row = []
            for cmd in (("agent", "sync"), ("agent", "rollback")):
                t0 = time.perf_counter()
                cli.ok(*cmd)
                t1 = time.perf_counter()
                time.sleep(0.2)   # let the pinger see the first answers after
                row.append((pinger.window(t0, t1), t1 - t0))
                if qemu_pid(vm) != qemu:
                    sys.exit(f"cycle {cycle}: the VM's QEMU process changed")
            rows.append(row)
            print(f"cycle {cycle + 1:2d}: update window {row[0][0] * 1000:6.0f} ms "
                  f"(command {row[0][1]:.1f} s), rollback window {row[1][0] * 1000:6.0f} ms "
                  f"(command {row[1][1]:.1f} s)")
        pinger.stopping.set()
        pinger.join()
        windows = [w for row in rows for w, _ in row]
        rtt, start = statistics.median(pinger.rtt), statistics.median(starts)
        cold = statistics.median(fresh)
        med, worst = statistics.median(windows), max(windows)
        print(f"cycles: {args.cycles}, cores: {os.cpu_count()}, pings answered: "
              f"{len(pinger.ok)}, QEMU PID unchanged: {qemu}")
        print(f"restart window (no answer):      median {med * 1000:.0f} ms, "
              f"max {worst * 1000:.0f} ms")
        print(f"baseline ping round trip:        median {rtt * 1000:.2f} ms")
        print(f"baseline `ppec-agent --help`:    median {start * 1000:.0f} ms")
        print(f"baseline fresh agent start:      median {cold * 1000:.0f} ms "
              f"(`ppec-agent serve` to its first answer, test driver)")
        print(f"ratio window / fresh start:      median {med / cold:.2f}, "
              f"max {worst / cold:.2f}")
        print(f"ratio window / process start:    median {med / start:.2f}, "
              f"max {worst / start:.2f}")
        print(f"ratio window / ping round trip:  median {med / rtt:.0f}")
    finally:
        cli.run("vm", "delete", vm)
        answered = call(agent.socket, "agent.manifest") if agent.socket.exists() else {}
        agent.kill()
        pid = answered.get("result", {}).get("pid")
        if pid:
            subprocess.run(["kill", "-9", str(pid)], capture_output=True, check=False)


if __name__ == "__main__":
    main()
