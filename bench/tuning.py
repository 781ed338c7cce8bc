#!/usr/bin/env python3
"""A guest's 256 MiB write to a data disk with cache='none' (O_DIRECT, io='native', what
the agent picks where the storage dir allows it) against cache='writeback' (io='threads',
libvirt's default), on the same machine in the same run.

Each round boots the test guest (tests/guest, TCG) on a real agent of each kind, attaches
a data disk the guest then fills with `dd ... conv=fsync` (`ppec.fill=vdb:N`), and
measures: the time from the attach to the guest's "PPEC-FILL-DONE" line, and how much of
the disk's file the host's page cache holds afterwards (`fincore`). Rounds alternate the
two kinds. Then `ppec vm create` of a dedicated VM of --vm-mib MiB (1 GiB) backed by 2 MiB
huge pages (the pages reserved on node 0 for the run) against the same VM without, whole
CLI process each, alternating (QEMU preallocates the huge pages at start).

2026-12-08, this machine (2 cores, TCG guest, ext4), 3 rounds, two runs: cache=none
3.08 / 3.20 s with 0 MiB of the file in the host page cache afterwards; writeback 3.17 /
3.49 s with 256 MiB; time ratio none / writeback 0.97x / 0.92x (the guest's own fsync
makes writeback wait for the disk too). vm create of a dedicated 1 GiB VM: 0.43 s on 2 MiB
pages against 0.39 s without (1.12x: QEMU preallocates the pages at start).

    .venv/bin/python bench/tuning.py [--rounds 3] [--mib 256] [--vm-mib 1024] [--json]
    (as root)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.realparts import QEMU_SCRATCH, Agent, Cli, clean_domains, guest_fill, page_cached, unique


def one(cli: Cli, agent: Agent, guest: Path, mib: int) -> tuple[float, int]:
    vm, path, elapsed = guest_fill(cli, agent, guest, mib)
    cached = page_cached(path)
    cli.ok("vm", "delete", vm)
    return elapsed, cached


HUGE = Path("/sys/devices/system/node/node0/hugepages/hugepages-2048kB")


def disk_part(root: Path, cli: Cli, guest: Path, rounds: int, mib: int) -> dict[str, Any]:
    agents = {kind: Agent(root / kind, host=unique(kind), libvirt_uri="qemu:///system",
                          extra={"cpu_overcommit": 12.0, "domain_type": "qemu",
                                 "image_dir": str(guest), "disk_cache": kind}).start()
              for kind in ("none", "writeback")}
    results: dict[str, list[tuple[float, int]]] = {k: [] for k in agents}
    try:
        for agent in agents.values():
            cli.ok("host", "add", agent.host, "--address", "local", "--socket",
                   str(agent.socket))
        for _ in range(rounds):
            for kind, agent in agents.items():
                results[kind].append(one(cli, agent, guest, mib))
    finally:
        for agent in agents.values():
            agent.kill()
    med = {k: (statistics.median(t for t, _ in v), statistics.median(c for _, c in v))
           for k, v in results.items()}
    return {"none_s": round(med["none"][0], 2), "writeback_s": round(med["writeback"][0], 2),
            "none_cached_mib": med["none"][1] >> 20,
            "writeback_cached_mib": med["writeback"][1] >> 20,
            "time_ratio_none_vs_writeback": round(med["none"][0] / med["writeback"][0], 2)}


def huge_part(root: Path, cli: Cli, rounds: int, mib: int) -> dict[str, Any]:
    """`vm create` of a dedicated VM of ``mib`` MiB with 2 MiB pages against without."""
    if " hugetlbfs " not in Path("/proc/mounts").read_text():
        return {"skipped": "no hugetlbfs mounted (scripts/setup.sh mounts /dev/hugepages)"}
    nr = HUGE / "nr_hugepages"
    before = int(nr.read_text())
    nr.write_text(str(before + mib // 2))
    agent = Agent(root / "huge", host=unique("huge"), libvirt_uri="qemu:///system",
                  extra={"domain_type": "qemu"}).start()
    times: dict[str, list[float]] = {"2M": [], "none": []}
    try:
        cli.ok("host", "add", agent.host, "--address", "local", "--socket", str(agent.socket))
        for _ in range(rounds):
            for kind in times:
                vm = unique("hp")
                t = time.perf_counter()
                cli.ok("vm", "create", vm, "--host", agent.host, "--cpus", "1", "--memory",
                       f"{mib}M", "--disk", "16M", "--numa", "dedicated",
                       *(["--hugepages", "2M"] if kind == "2M" else []))
                times[kind].append(time.perf_counter() - t)
                cli.ok("vm", "delete", vm)
    finally:
        agent.kill()
        nr.write_text(str(before))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"hugepages_s": round(med["2M"], 2), "ordinary_s": round(med["none"], 2),
            "create_ratio_hugepages_vs_ordinary": round(med["2M"] / med["none"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--vm-mib", type=int, default=1024, help="the hugepage VM's memory")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    guest = Path(subprocess.run([str(Path(__file__).parents[1] / "tests/guest/build.sh")],
                                capture_output=True, text=True, check=True
                                ).stdout.strip().splitlines()[-1])
    QEMU_SCRATCH.mkdir(mode=0o711, exist_ok=True)
    root = QEMU_SCRATCH / unique("bench-tuning")
    root.mkdir(mode=0o711)
    cli = Cli(root / "cli")
    try:
        doc = {"mib": a.mib, "rounds": a.rounds,
               **disk_part(root, cli, guest, a.rounds, a.mib),
               "vm_mib": a.vm_mib, **huge_part(root, cli, a.rounds, a.vm_mib)}
    finally:
        clean_domains(root)
    if a.json:
        print(json.dumps(doc))
        return
    print(f"guest writes {a.mib} MiB + fsync to a fresh data disk, median of {a.rounds}:")
    for k in ("none", "writeback"):
        print(f"  cache={k:<9} {doc[k + '_s']:6.2f} s, host page cache after: "
              f"{doc[k + '_cached_mib']} MiB of the disk's file")
    print(f"time ratio none / writeback: {doc['time_ratio_none_vs_writeback']}x")
    if "skipped" in doc:
        print(f"hugepage VM: skipped: {doc['skipped']}")
        return
    print(f"vm create of a dedicated {a.vm_mib} MiB VM: 2M pages {doc['hugepages_s']:.2f} s, "
          f"ordinary {doc['ordinary_s']:.2f} s, ratio "
          f"{doc['create_ratio_hugepages_vs_ordinary']}x")


if __name__ == "__main__":
    main()
