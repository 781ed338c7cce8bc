#!/usr/bin/env python3
"""CLI start-up: each command's wall time against `python -c "import typer"`, as ratios.

    .venv/bin/python bench/cli.py [--runs 10]

Medians of --runs fresh processes, interleaved round by round so a neighbour's burst on
this shared machine hits every command alike: `ppec --help`; `ppec host list` on an empty
store; `ppec vm list` with one local agent (a real `ppec-agent serve` on libvirt's test
driver, tests/realparts.Agent); `ppec place` over 100 hosts from a snapshot file in the
`ppec host export-snapshot` format (`--from-snapshot`). Targets (issue 13): --help at most
1.5x, host list and vm list at most 2x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.placement.fleets import fleet, store_fleet
from tests.realparts import Agent

BIN = Path(sys.executable).parent
PPEC = str(BIN / "ppec")


def once(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ppec-bench-cli-") as tmp:
        root = Path(tmp)
        base = {**os.environ, "NO_COLOR": "1", "XDG_CONFIG_HOME": str(root / "config")}
        base.pop("PPEC_DB", None)
        empty = {**base, "XDG_DATA_HOME": str(root / "empty")}
        one = {**base, "XDG_DATA_HOME": str(root / "one")}
        snap = root / "fleet.json"
        # The file as operators make it: a store with the fleet, then `host export-snapshot`.
        store_fleet(root / "export.db", fleet(100, seed=3, now=time.time()))
        subprocess.run([PPEC, "--db", str(root / "export.db"), "host", "export-snapshot",
                        str(snap)], env=base, check=True, capture_output=True)
        agent = Agent(root / "agent", "bench").start()
        try:
            subprocess.run([PPEC, "host", "add", "bench", "--address", "local", "--socket",
                            str(agent.socket)], env=one, check=True, capture_output=True)
            cases = {
                "import typer": ([sys.executable, "-c", "import typer"], base),
                "ppec --help": ([PPEC, "--help"], empty),
                "ppec host list (empty store)": ([PPEC, "host", "list"], empty),
                "ppec vm list (one local agent)": ([PPEC, "vm", "list"], one),
                "ppec place (100 hosts, snapshot file)": (
                    [PPEC, "place", "--cpus", "2", "--memory", "4G", "--from-snapshot",
                     str(snap)], empty),
            }
            for cmd, env in cases.values():     # warm the page cache and .pyc files
                once(cmd, env)
            times: dict[str, list[float]] = {k: [] for k in cases}
            for _ in range(args.runs):
                for label, (cmd, env) in cases.items():
                    times[label].append(once(cmd, env))
        finally:
            agent.kill()
    base_t = statistics.median(times["import typer"])
    print(f"medians of {args.runs} runs each, interleaved")
    targets = {"ppec --help": 1.5, "ppec host list (empty store)": 2.0,
               "ppec vm list (one local agent)": 2.0}
    for label, ts in times.items():
        med = statistics.median(ts)
        goal = f"  (target <= {targets[label]:g}x)" if label in targets else ""
        print(f"  {label:40s} {med * 1000:6.0f} ms   {med / base_t:5.2f}x import typer{goal}")


if __name__ == "__main__":
    main()
