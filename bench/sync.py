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
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.fleet import make_fleet
from tests.realparts import TEST_NODE_URI, Cli, make_key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=30)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ppec-bench-sync-"))
    key = root / "operator_ed25519"
    hosts = make_fleet(root / "fleet", args.hosts, TEST_NODE_URI, make_key(key))
    cli = Cli(root / "operator")
    try:
        for h in hosts:
            cli.ok(*h.add_args(key), "--accept-new-host-key")
        known = root / "known_hosts"
        known.write_text((Path(cli.env["XDG_CONFIG_HOME"]) / "ppec" / "known_hosts")
                         .read_text())

        def ssh_true(h: object) -> None:
            subprocess.run(["ssh", "-i", str(key), "-p", str(h.sshd.port),  # type: ignore[attr-defined]
                            "-o", f"UserKnownHostsFile={known}", "-o", "BatchMode=yes",
                            f"root@{h.sshd.address}", "true"],  # type: ignore[attr-defined]
                           capture_output=True, check=True, timeout=60)

        sync_t, ssh_t = [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            cli.ok("sync", "-o", "json")
            sync_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
                list(pool.map(ssh_true, hosts))
            ssh_t.append(time.perf_counter() - t)
    finally:
        for h in hosts:
            h.sshd.stop()
            h.agent.kill()
    s, b = statistics.median(sync_t), statistics.median(ssh_t)
    print(f"hosts: {args.hosts}, runs: {args.runs}, cores: {os.cpu_count()}")
    print(f"ppec sync (snapshots stored):      median {s * 1000:.0f} ms")
    print(f"parallel `ssh HOST true`:          median {b * 1000:.0f} ms")
    print(f"ratio ppec sync / ssh fan-out:     {s / b:.2f}")


if __name__ == "__main__":
    main()
