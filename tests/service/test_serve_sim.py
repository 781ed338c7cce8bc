"""The real `ppec serve` over a simulated fleet of 300 hosts, 5% of whose agents are down:
within two rounds every healthy host's snapshot is fresh in the store, the failing ones are
failed and backed off, and the API lists all 300 with their freshness (issue 19)."""

from __future__ import annotations

import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from ppec.operator.store import Store
from tests.realparts import Cli
from tests.service.serving import Service, snapshot_times, statuses
from tests.sim.fleet import SimFleet, SimSettings, add_to_store

SETTINGS = {"snapshot_interval": 1.0, "drift_interval": 30.0, "agent_check_interval": 30.0,
            "jitter": 0.0, "backoff_base": 30.0, "backoff_cap": 60.0}


def pages(port: int) -> list[dict[str, Any]]:
    hosts, cursor = [], ""
    while True:
        url = f"http://127.0.0.1:{port}/api/v1/hosts?limit=100" + \
            (f"&cursor={cursor}" if cursor else "")
        with urllib.request.urlopen(url, timeout=30) as r:
            page = json.loads(r.read())
        hosts += page["hosts"]
        if not page.get("next_cursor"):
            return hosts
        cursor = page["next_cursor"]


def test_serve_over_300_simulated_hosts_with_5_percent_down(cli: Cli) -> None:
    sim = SimSettings(300, Path(tempfile.mkdtemp(prefix="ppec-sim-")), fail_rate=0.05)
    with SimFleet(sim, parts=3) as fleet:
        healthy, failing = set(fleet.healthy()), set(fleet.failing())
        assert failing and len(healthy) + len(failing) == 300
        store = Store(cli.db)
        add_to_store(sim, store)
        store.close()
        service = Service(cli, cli.db.parent / "serve", SETTINGS)
        started = time.time()
        try:
            service.start()
            port = service.http_port()
            service.wait_rounds(2, timeout=300)
            taken = snapshot_times(cli.db)
            assert set(taken) == healthy
            assert all(t >= started for t in taken.values())
            state = statuses(cli.db)
            assert {h for h, s in state.items() if s[0] == "failed"} == failing
            # Backed off: after the first failure a down host is not asked for 30 s, so
            # later rounds skip exactly the failing hosts.
            service.wait_rounds(3, timeout=300)
            later = service.rounds()[2]
            assert later["hosts"] == len(healthy) and later["backing_off"] == len(failing)
            assert all(statuses(cli.db)[h][1] == 1 for h in failing)
            listed = pages(port)
            assert len(listed) == 300 and len({h["name"] for h in listed}) == 300
            by_state = {h["name"]: h["state"] for h in listed}
            assert {n for n, s in by_state.items() if s == "failed"} == failing
            assert all(by_state[n] in ("fresh",) for n in healthy)
            assert all(h["age_s"] is not None for h in listed if h["name"] in healthy)
        finally:
            service.stop()
