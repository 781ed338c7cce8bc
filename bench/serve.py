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
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sshfleet import Fleet, sshd_fleet
from ppec.operator.store import Store
from ppec.service.jobs import Env
from ppec.service.jobs.snapshots import Snapshots
from ppec.service.log import Log
from ppec.service.notify import Dispatch
from ppec.service.pool import HostPool
from ppec.service.settings import from_config


def round_time(env: Env, store: Store) -> float:
    hosts = store.hosts()
    t = time.perf_counter()
    out = Snapshots().round(env, hosts, time.time())
    took = time.perf_counter() - t
    assert not out.failed, out.failed
    return took


def measure(fleet: Fleet, runs: int) -> dict[str, list[float]]:
    cli = fleet.cli
    settings = replace(from_config({}, db=str(cli.db)), known_hosts=fleet.known_hosts)
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
            t["ssh"].append(fleet.ssh_fanout())
    finally:
        warm_pool.close()
        store.close()
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--hosts", type=int, default=30)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    with sshd_fleet(args.hosts, "ppec-bench-serve-") as fleet:
        t = measure(fleet, args.runs)
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
