"""Readers and writers at once (issue 27): 1,000 concurrent API readers, each on its own
keep-alive connection asking for a page of hosts every 3 s, while 20 `ppec vm create`
processes place and build VMs on four hosts (real agents on libvirt's test driver) through
the same store. No request may fail, no create may fail, every VM is where the store
says; the readers' p99 is printed (its target is bench/scale.py's, not a pass/fail
here: timings in a shared CI machine are not a verdict)."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realparts import PPEC, Agent, Cli
from tests.sim.readers import Seen, read_for, start_http

HOSTS = 4
CREATES = 20


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[Agent]]:
    started = [Agent(tmp_path / f"a{i}", host=f"h{i}").start() for i in range(HOSTS)]
    yield started
    for a in started:
        a.kill()


def test_1000_readers_while_20_creates_run(cli: Cli, agents: list[Agent]) -> None:
    for i, agent in enumerate(agents):
        cli.ok("host", "add", f"h{i}", "--address", "local", "--socket", str(agent.socket))
    cli.ok("sync")
    server, port = start_http(str(cli.db), cli.env)
    try:
        seen: list[Seen] = []
        readers = threading.Thread(target=lambda: seen.append(
            read_for(port, readers=1000, seconds=25.0)), daemon=True)
        readers.start()
        procs = [subprocess.Popen([PPEC, "vm", "create", f"load{i:02d}", "--cpus", "1",
                                   "--memory", "256M", "--disk", "1G", "-o", "json"],
                                  env=cli.env, text=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) for i in range(CREATES)]
        outcomes = [(p.wait(timeout=300), p.stdout.read() if p.stdout else "",
                     p.stderr.read() if p.stderr else "") for p in procs]
        readers.join(120)
    finally:
        server.terminate()
        server.wait(30)
    assert not readers.is_alive() and seen
    failed = [(rc, err[-300:]) for rc, _, err in outcomes if rc != 0]
    assert not failed, failed
    assert not seen[0].failures, seen[0].failures[:5]
    assert len(seen[0].latencies) > 5000   # 1,000 readers x 25 s / 3 s, less the start
    print(f"\n1,000 readers during {CREATES} creates: {len(seen[0].latencies)} pages, "
          f"p50 {seen[0].percentile(0.5):.1f} ms, p99 {seen[0].percentile(0.99):.1f} ms")
    where = {v["name"]: v["host"] for v in json.loads(cli.ok("vm", "list", "-o", "json")
                                                        .stdout)["vms"]}
    assert sorted(where) == [f"load{i:02d}" for i in range(CREATES)]
    for i, agent in enumerate(agents):   # each host's ledger holds the VMs placed there
        mine = sorted(n for n, h in where.items() if h == f"h{i}")
        assert sorted(agent.ledger_rows()) == mine, (i, mine)
