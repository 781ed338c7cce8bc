#!/usr/bin/env python3
"""One snapshot round of `ppec serve` over warm connections, against the same round done
cold by `ppec sync`, and against 30 parallel `ssh HOST true`.

Builds a real fleet on this machine (an agent on libvirt's test driver and an OpenSSH sshd
on its own loopback address per host), then times, in the same run, the median of several:
- warm: the service's snapshot job (`ppec.service.jobs.snapshots`) over its pool of open
  connections, snapshots written to the store in one batch (as `ppec serve` does each round);
- cold in-process: the same job with a new pool each time (SSH handshakes included);
- `ppec sync -o json`: the whole CLI process, cold;
- 30 parallel `ssh -i KEY -p PORT root@ADDR true` (OpenSSH's handshake and a trivial command).

    .venv/bin/python bench/serve.py [--hosts 30] [--runs 7]      (as root)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ppec.operator.store import Store
from ppec.service.jobs import Env
from ppec.service.jobs.snapshots import Snapshots
from ppec.service.log import Log
from ppec.service.notify import Dispatch
from ppec.service.pool import HostPool
from ppec.service.settings import from_config
from tests.e2e.fleet import SimHost, make_fleet
from tests.realparts import TEST_NODE_URI, Cli, make_key


def round_time(env: Env, store: Store) -> float:
    hosts = store.hosts()
    t = time.perf_counter()
    out = Snapshots().round(env, hosts, time.time())
    took = time.perf_counter() - t
    assert not out.failed, out.failed
    return took


def ssh_fanout(hosts: list[SimHost], key: Path, known: Path) -> float:
    def one(h: SimHost) -> None:
        subprocess.run(["ssh", "-i", str(key), "-p", str(h.sshd.port),
                        "-o", f"UserKnownHostsFile={known}", "-o", "BatchMode=yes",
                        f"root@{h.sshd.address}", "true"],
                       capture_output=True, check=True, timeout=60)
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        list(pool.map(one, hosts))
    return time.perf_counter() - t


def measure(hosts: list[SimHost], cli: Cli, key: Path, runs: int) -> dict[str, list[float]]:
    known = Path(cli.env["XDG_CONFIG_HOME"]) / "ppec" / "known_hosts"
    settings = replace(from_config({}, db=str(cli.db)), known_hosts=known)
    store, log, stop = Store(cli.db), Log(level="error"), threading.Event()
    notify = Dispatch((), log)
    warm_pool = HostPool(settings.reach(), settings.workers)
    warm_env = Env(store, warm_pool, settings, log, notify, stop)
    round_time(warm_env, store)   # opens the connections, once
    t: dict[str, list[float]] = {"warm": [], "cold": [], "sync": [], "ssh": []}
    try:
        for _ in range(runs):
            t["warm"].append(round_time(warm_env, store))
            cold_pool = HostPool(settings.reach(), settings.workers)
            t["cold"].append(round_time(replace(warm_env, pool=cold_pool), store))
            cold_pool.close()
            start = time.perf_counter()
            cli.ok("sync", "-o", "json")
            t["sync"].append(time.perf_counter() - start)
            t["ssh"].append(ssh_fanout(hosts, key, known))
    finally:
        warm_pool.close()
        store.close()
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--hosts", type=int, default=30)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ppec-bench-serve-"))
    key = root / "operator_ed25519"
    hosts = make_fleet(root / "fleet", args.hosts, TEST_NODE_URI, make_key(key))
    cli = Cli(root / "operator")
    try:
        for h in hosts:
            cli.ok(*h.add_args(key), "--accept-new-host-key")
        t = measure(hosts, cli, key, args.runs)
    finally:
        for h in hosts:
            h.sshd.stop()
            h.agent.kill()
    med: dict[str, Any] = {k: statistics.median(v) for k, v in t.items()}
    print(f"hosts: {args.hosts}, runs: {args.runs}, cores: {os.cpu_count()}")
    print(f"serve round, warm connections:        median {med['warm'] * 1000:7.1f} ms  "
          f"({med['warm'] * 1000 / args.hosts:.2f} ms/host)")
    print(f"serve round, new connections:         median {med['cold'] * 1000:7.1f} ms")
    print(f"ppec sync (whole process, cold):      median {med['sync'] * 1000:7.1f} ms")
    print(f"parallel `ssh HOST true`:             median {med['ssh'] * 1000:7.1f} ms")
    print(f"ratio warm round / ssh fan-out:       {med['warm'] / med['ssh']:.3f}  "
          f"(target <= 0.1)")
    print(f"ratio warm round / ppec sync:         {med['warm'] / med['sync']:.3f}")
    print(f"ratio warm round / cold round:        {med['warm'] / med['cold']:.3f}")


if __name__ == "__main__":
    main()
