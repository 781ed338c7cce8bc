#!/usr/bin/env python3
"""Fleet scale: the service, the store, placement, capacity and the API on a simulated fleet.

    .venv/bin/python bench/scale.py [--sizes 1000,5000,10000] [--json]     (as root)

For each size, a simulated fleet (tests/sim/fleet.py: fake agents on Unix sockets, in four
processes, speaking the real protocol; no SSH, which bench/serve.py measures on real sshd
hosts) in a fresh SQLite store, then:

- round_s, cpu_s_per_host, rss_mib: the service's snapshot round over warm connections
  (the second round of `ppec serve`'s own job code, in a child process of its own);
- store_write_s: one round's snapshots and statuses written by the store code, on SQLite
  and on PostgreSQL (a fresh database on the loopback server set-up starts);
- place_cli_s, dry_run_cli_s: whole `ppec place --explain` and `ppec vm create --dry-run`
  processes with that many fresh snapshots in the store;
- placements_per_s: 1,000 sequential placements through ppec.placement, each VM applied
  to its host before the next decision;
- capacity_s: whole `ppec capacity` process with a dedicated (NUMA-pinned) shape;
- api_p50_ms, api_p99_ms: a page of /api/v1/hosts under 1,000 concurrent loopback readers,
  each on its own keep-alive connection asking every 3 s (the web UI's refresh), while a
  service round runs; metrics_s: one /metrics scrape. (1,000 readers asking back to back
  would measure only queueing: by Little's law a p99 of 50 ms at 1,000 requests in flight
  needs 20,000 answers a second, which no single process serves on this machine.)

Each figure is also printed as the ratio of the largest size to the smallest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.realparts import PPEC
from tests.sim.fleet import SimFleet, SimSettings, add_to_store, host_answers
from tests.sim.readers import read_for, start_http

PG_ADMIN = "postgresql://ppec:ppec@127.0.0.1:5432/postgres"
TARGETS = {"round_s": 60.0, "rss_mib": 1024.0, "place_cli_s": 0.3, "dry_run_cli_s": 0.3,
           "placements_per_s": 1000.0, "capacity_s": 1.0, "api_p99_ms": 50.0,
           "metrics_s": 1.0}


def service_round(db: str) -> dict[str, float]:
    """In a child process: two snapshot rounds of the service's own job; the second is
    the warm one. Returns its wall time, CPU seconds, and the process's peak RSS."""
    code = f"""
import json, resource, sys, time, threading
from ppec.service.jobs.snapshots import Snapshots
from ppec.service.log import Log
from ppec.service.runner import Jobs
from ppec.service.settings import Settings
s = Settings(db={db!r}, once=True)
jobs = Jobs(s, Log(open('/dev/null', 'w')), [Snapshots()])
jobs.run_once()
c0, t0 = time.process_time(), time.monotonic()
done = jobs.run_once()
wall, cpu = time.monotonic() - t0, time.process_time() - c0
failed = len(done[0].last.failed) if done[0].last else -1
jobs.close()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"round_s": wall, "cpu_s": cpu, "rss_mib": rss, "failed": failed}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=1800)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def store_write(settings: SimSettings, location: str) -> float:
    from ppec.operator.store import Store
    from ppec.operator.store import fleetstate as fs
    store = Store(location)
    add_to_store(settings, store)
    now = time.time()
    ok = [fs.Success(settings.name(i), now, {**host_answers(settings, i)["host.snapshot"],
                                             "taken_at": now})
          for i in range(settings.count)]
    t = time.perf_counter()
    fs.record_round(store, ok, [], now)
    took = time.perf_counter() - t
    store.close()
    return took


def pg_write(settings: SimSettings) -> float | None:
    try:
        import psycopg
        name = f"ppec_scale_{os.getpid()}_{settings.count}"
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name}")
            admin.execute(f"CREATE DATABASE {name}")
    except Exception as e:
        print(f"  (PostgreSQL unavailable: {e}; run scripts/setup.sh)", file=sys.stderr)
        return None
    try:
        return store_write(settings, f"postgresql://ppec:ppec@127.0.0.1:5432/{name}")
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            # Not WITH (FORCE): the store is closed by now, and FORCE also tries to end
            # autovacuum workers, which the role ppec may not signal.
            admin.execute(f"DROP DATABASE IF EXISTS {name}")


def cli_median(env: dict[str, str], *args: str, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        done = subprocess.run([PPEC, *args], env=env, capture_output=True, text=True,
                              check=False, timeout=600)
        times.append(time.perf_counter() - t)
        if done.returncode not in (0, 3):
            raise RuntimeError(f"ppec {' '.join(args)}: exit {done.returncode}: "
                               f"{done.stderr.strip()[-500:]}")
    return statistics.median(times)


def placements_per_s(db: str, count: int = 1000) -> float:
    from ppec.numa import NoFit, fit
    from ppec.numa import Request as NumaRequest
    from ppec.operator import snapshots
    from ppec.operator.store import Store
    from ppec.placement import FleetIndex, Request, place
    store = Store(db)
    data = {h: d for h, (_, d) in store.snapshots().items()}
    hosts = [snapshots.to_placement(h, data.get(h.name)) for h in store.hosts()]
    store.close()
    index = FleetIndex(hosts)
    req = Request(vcpus=2, memory_mib=4096, numa=NumaRequest(2, 4096, policy="dedicated"))
    now = time.time()
    t = time.perf_counter()
    placed = 0
    for i in range(count):
        d = place(index, req, now=now)
        if d.host is None:
            break
        h = index.hosts[index.pos[d.host]]
        plan = fit(h.topology, h.allocations, req.numa_request, overcommit=h.overcommit)
        assert not isinstance(plan, NoFit)
        index.update(_with(h, plan.allocation(f"seq{i}", 2, 4096)))
        placed += 1
    return placed / (time.perf_counter() - t)


def _with(h: Any, alloc: Any) -> Any:
    from ppec.placement.model import with_allocation
    return with_allocation(h, alloc)


def api_latency(port: int, readers: int = 1000, seconds: float = 15.0,
                every: float = 3.0) -> tuple[float, float]:
    seen = read_for(port, readers=readers, seconds=seconds, every=every)
    return seen.percentile(0.5), seen.percentile(0.99)


def scrape(port: int) -> float:
    import urllib.request
    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60).read()  # warm
    t = time.perf_counter()
    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60).read()
    return time.perf_counter() - t


def one_size(size: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"ppec-scale-{size}-"))
    settings = SimSettings(size, root / "s")
    db = str(root / "ppec.db")
    out: dict[str, Any] = {}
    with SimFleet(settings, parts=4):
        from ppec.operator.store import Store
        store = Store(db)
        add_to_store(settings, store)
        store.close()
        r = service_round(db)
        out |= {"round_s": r["round_s"], "cpu_s_per_host": r["cpu_s"] / size,
                "rss_mib": r["rss_mib"]}
        out["store_write_s"] = {"sqlite": store_write(settings, str(root / "w.db")),
                                "postgresql": pg_write(settings)}
        env = {**os.environ, "PPEC_DB": db, "XDG_CONFIG_HOME": str(root / "config"),
               "NO_COLOR": "1", "COLUMNS": "200"}
        (root / "config" / "ppec").mkdir(parents=True)
        # Snapshots of the round above are fresh for the CLI for a minute.
        (root / "config" / "ppec" / "config.toml").write_text(
            "[placement]\nfresh_for = \"600s\"\n")
        out["place_cli_s"] = cli_median(env, "place", "--cpus", "2", "--memory", "4G",
                                        "--explain", "-o", "json")
        out["dry_run_cli_s"] = cli_median(env, "vm", "create", "scale-x", "--cpus", "2",
                                          "--memory", "4G", "--disk", "10G", "--dry-run",
                                          "-o", "json")
        out["placements_per_s"] = placements_per_s(db)
        out["capacity_s"] = cli_median(env, "capacity", "--cpus", "4", "--memory", "8G",
                                       "--numa", "dedicated", "-o", "json", runs=3)
        proc, port = start_http(db)
        try:
            background = threading.Thread(target=service_round, args=(db,), daemon=True)
            background.start()
            out["api_p50_ms"], out["api_p99_ms"] = api_latency(port)
            out["metrics_s"] = scrape(port)
            background.join()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    shutil.rmtree(root, ignore_errors=True)
    return out


def flat(doc: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            out |= {f"{k}.{kk}": vv for kk, vv in v.items() if vv is not None}
        elif v is not None:
            out[k] = v
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,5000,10000")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {}
    for size in sizes:
        print(f"== {size} hosts", file=sys.stderr, flush=True)
        results[str(size)] = one_size(size)
        if not args.json:
            for k, v in flat(results[str(size)]).items():
                target = TARGETS.get(k)
                print(f"  {k:24s} {v:12.4f}" + (f"   (target {target})" if target else ""))
    small, large = flat(results[str(sizes[0])]), flat(results[str(sizes[-1])])
    growth = {k: large[k] / small[k] for k in large if small.get(k)}
    if args.json:
        print(json.dumps({"sizes": results, "growth": growth}, indent=2))
    else:
        print(f"growth {sizes[-1]} / {sizes[0]} hosts ({sizes[-1] / sizes[0]:.0f}x):")
        for k, v in growth.items():
            print(f"  {k:24s} {v:8.2f}x")


if __name__ == "__main__":
    main()
