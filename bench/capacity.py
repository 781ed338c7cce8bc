#!/usr/bin/env python3
"""`ppec capacity` counting against a place-until-full simulation and Ganeti's hspace.

Same empty fleet for all three (single-node hosts, 16 CPUs with one kept for the host,
64 GiB, 1 TiB; vCPUs at most one per CPU; no NUMA, no N+1), shape 2 vCPU / 2 GiB / 10 GiB.
Prints each count and time for 20, 50 and 1,000 hosts. hspace is skipped where it would
take longer than --hspace-limit hosts allow (it took ~30 s for 20 hosts here).

    .venv/bin/python bench/capacity.py [--sizes 20,50,1000] [--hspace-limit 50]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ppec.placement import Request
from ppec.placement.headroom import fleet_capacity
from tests.placement.fleets import HSPACE, hspace_count, identical
from tests.placement.test_headroom import place_until_full

NOW = 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20,50,1000")
    ap.add_argument("--hspace-limit", type=int, default=50)
    args = ap.parse_args()
    req = Request(vcpus=2, memory_mib=2048, disk_bytes=10 << 30)
    print(f"{'hosts':>6} {'ppec':>8} {'time':>9} {'place-until-full':>17} {'time':>9} "
          f"{'ratio':>6} {'hspace':>8} {'time':>9}")
    for n in (int(x) for x in args.sizes.split(",")):
        hosts = identical(n, NOW)
        t = time.perf_counter()
        ours = sum(c.fits for c in fleet_capacity(hosts, req, now=NOW))
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        sim = place_until_full(hosts, req)
        t_sim = time.perf_counter() - t
        if n <= args.hspace_limit and Path(HSPACE).exists():
            t = time.perf_counter()
            theirs: str = str(hspace_count(n, 2, 2048, 10 * 1024))
            t_h = f"{time.perf_counter() - t:8.2f}s"
        else:
            theirs, t_h = "skipped", "-"
        print(f"{n:>6} {ours:>8} {t_ours:8.2f}s {sim:>17} {t_sim:8.2f}s "
              f"{t_ours / t_sim:6.3f} {theirs:>8} {t_h:>9}")


if __name__ == "__main__":
    main()
