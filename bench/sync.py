#!/usr/bin/env python3
"""`ppec sync` of 30 hosts against `ssh HOST true` run in parallel for the same hosts.

Builds a real fleet on this machine (an agent on libvirt's test driver and an OpenSSH sshd
on its own loopback address per host), then times, in the same run, median of several:
`ppec sync -o json` (SSH + forced-command proxy + agent snapshot + store) and 30 parallel
`ssh -i KEY -p PORT root@ADDR true` (OpenSSH's own handshake and a trivial command).

    .venv/bin/python bench/sync.py [--hosts 30] [--runs 5]      (as root)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sshfleet import sshd_fleet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=30)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    sync_t, ssh_t = [], []
    with sshd_fleet(args.hosts, "ppec-bench-sync-") as fleet:
        for _ in range(args.runs):
            t = time.perf_counter()
            fleet.cli.ok("sync", "-o", "json")
            sync_t.append(time.perf_counter() - t)
            ssh_t.append(fleet.ssh_fanout())
    s, b = statistics.median(sync_t), statistics.median(ssh_t)
    print(f"hosts: {args.hosts}, runs: {args.runs}, cores: {os.cpu_count()}")
    print(f"ppec sync (snapshots stored):      median {s * 1000:.0f} ms")
    print(f"parallel `ssh HOST true`:          median {b * 1000:.0f} ms")
    print(f"ratio ppec sync / ssh fan-out:     {s / b:.2f}")


if __name__ == "__main__":
    main()
