"""/metrics: the numbers of real agents' snapshots in Prometheus' text format, checked by
promtool and scraped by a real Prometheus (Debian's package) started here on loopback;
the summary counted from the JSON equals ppec.placement's own Summary."""

from __future__ import annotations

import json
import random
import re
import subprocess
import time
import urllib.error
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from ppec.operator import snapshots
from ppec.operator.store import Host, Store, fleetstate
from ppec.service.http.snapcache import parse, summary_of
from tests.realparts import Agent, Cli, free_port, wait_until
from tests.service.http_support import SHAPES, fill, get, serving, snapshot

SAMPLE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (\S+)$')


def samples(text: str) -> dict[str, dict[str, float]]:
    """family -> {label text: value}; fails on a family split in two or without TYPE."""
    out: dict[str, dict[str, float]] = {}
    typed, seen_last = set(), ""
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, line
        family, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        assert family in typed, f"{family} has no TYPE line"
        assert family == seen_last or family not in out, f"{family} is split"
        out.setdefault(family, {})[labels] = value
        seen_last = family
    return out


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Cli]]:
    root = tmp_path_factory.mktemp("metrics")
    cli = Cli(root / "operator")
    agents = {n: Agent(root / n, host=n, libvirt_uri="test:///default").start()
              for n in ("m1", "m2")}
    try:
        for name, agent in agents.items():
            cli.ok("host", "add", name, "--address", "local", "--socket", str(agent.socket),
                   "--region", "eu", "--rack", f"rack-{name}")
        cli.ok("vm", "create", "pinned", "--cpus", "3", "--memory", "1G", "--disk", "1G",
               "--numa", "dedicated", "--host", "m1")
        cli.ok("vm", "create", "floaty", "--flavor", "tiny", "--host", "m2")
        cli.ok("vm", "stop", "floaty", "--force")
        cli.ok("sync")
        store = Store(str(cli.db))
        now = time.time()
        fleetstate.record_round(store, [], [fleetstate.Failure("m2", "UNREACHABLE", "gone")],
                                now)
        fleetstate.sync_alerts(store, "m1", "drift", [("DOMAIN_MISSING", "a", ""),
                                                      ("DOMAIN_MISSING", "b", ""),
                                                      ("FOREIGN_DOMAIN", "c", "")], now)
        fleetstate.record_job(store, "snapshots", now - 1, 0.25, True, hosts=2, failed=1)
        fleetstate.record_job(store, "snapshots", now, 0.5, False, hosts=2, failed=2,
                              error="all failed")
        store.close()
        with serving(cli.db) as url:
            yield url, cli
    finally:
        for agent in agents.values():
            agent.kill()


def test_metrics_say_what_the_snapshots_hold(fleet: tuple[str, Cli]) -> None:
    url = fleet[0]
    answer = get(url + "/metrics")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    m = samples(answer.body.decode())
    assert m["ppec_host_info"] == {
        '{host="m1",region="eu",rack="rack-m1",state="fresh",drained="false"}': 1,
        '{host="m2",region="eu",rack="rack-m2",state="failed",drained="false"}': 1}
    assert m["ppec_host_up"] == {'{host="m1"}': 1, '{host="m2"}': 0}
    assert m["ppec_host_cpus_used"] == {'{host="m1"}': 3, '{host="m2"}': 0}
    assert m["ppec_host_cpus_free"] == {'{host="m1"}': 13, '{host="m2"}': 16}
    assert m["ppec_host_memory_used_bytes"]['{host="m1"}'] == 1 << 30
    assert m["ppec_host_memory_free_bytes"]['{host="m1"}'] == (6144 - 1024) << 20
    assert m["ppec_numa_node_cpus_free"] == {
        '{host="m1",node="0"}': 5, '{host="m1",node="1"}': 8,
        '{host="m2",node="0"}': 8, '{host="m2",node="1"}': 8}
    assert m["ppec_host_storage_free_bytes"]['{host="m1"}'] > 0
    assert set(m["ppec_host_snapshot_age_seconds"]) == {'{host="m1"}', '{host="m2"}'}
    # m2 failed: its (stopped) VM is unknown, never stopped
    assert m["ppec_vms"] == {'{state="running"}': 1, '{state="unknown"}': 1}
    assert m["ppec_hosts"] == {'{state="fresh"}': 1, '{state="stale"}': 0,
                               '{state="changed"}': 0, '{state="failed"}': 1,
                               '{state="none"}': 0}
    assert m["ppec_alerts_open"] == {'{code="DOMAIN_MISSING"}': 2, '{code="FOREIGN_DOMAIN"}': 1}
    assert m["ppec_job_duration_seconds"] == {'{job="snapshots"}': 0.5}
    assert m["ppec_job_runs_total"] == {'{job="snapshots"}': 2}
    assert m["ppec_job_failures_total"] == {'{job="snapshots"}': 1}
    assert m["ppec_job_last_ok"] == {'{job="snapshots"}': 0}


def test_promtool_accepts_the_page(fleet: tuple[str, Cli]) -> None:
    if not Path("/usr/bin/promtool").exists():
        pytest.skip("promtool missing (scripts/setup.sh installs prometheus)")
    body = get(fleet[0] + "/metrics").body
    done = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()


@pytest.fixture
def prometheus(fleet: tuple[str, Cli], tmp_path: Path) -> Iterator[str]:
    if not Path("/usr/bin/prometheus").exists():
        pytest.skip("prometheus missing (scripts/setup.sh installs Debian's prometheus)")
    target = urllib.parse.urlsplit(fleet[0]).netloc
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                      "scrape_configs:\n  - job_name: ppec\n    static_configs:\n"
                      f"      - targets: ['{target}']\n")
    port = free_port("127.0.0.1")
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 -- lives with the process
    proc = subprocess.Popen(["/usr/bin/prometheus", f"--config.file={config}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=log)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def query(base: str, promql: str) -> list[dict[str, object]]:
    try:
        answer = get(f"{base}/api/v1/query?query={urllib.parse.quote(promql)}", timeout=10)
    except urllib.error.URLError:   # not listening yet
        return []
    if answer.status != 200:
        return []
    doc = answer.json()
    return doc["data"]["result"] if doc.get("status") == "success" else []  # type: ignore[no-any-return]


def test_a_real_prometheus_scrapes_the_host_series(prometheus: str) -> None:
    wait_until(lambda: len(query(prometheus, "ppec_host_info")) == 2, 90,
               "Prometheus to hold both hosts' series")
    used = query(prometheus, 'ppec_host_cpus_used{host="m1"}')
    assert [r["value"][1] for r in used] == ["3"]  # type: ignore[index]
    joined = query(prometheus, 'sum by (rack) (ppec_numa_node_cpus_free * on (host) '
                               'group_left (rack) ppec_host_info)')
    assert {r["metric"]["rack"]: r["value"][1] for r in joined} == {  # type: ignore[index]
        "rack-m1": "13", "rack-m2": "16"}
    up = query(prometheus, 'up{job="ppec"}')
    assert [r["value"][1] for r in up] == ["1"]  # type: ignore[index]


def test_the_summary_from_json_is_placements_summary(fleet: tuple[str, Cli]) -> None:
    _, cli = fleet
    store = Store(str(cli.db))
    real = store.snapshots()
    store.close()
    rng = random.Random(7)
    generated = {f"g{i}": (1.0, snapshot(f"g{i}", rng, 1.0, vms=rng.randrange(0, 12)))
                 for i in range(4 * len(SHAPES))}
    for name, (taken_at, data) in {**real, **generated}.items():
        want = snapshots.to_placement(Host(name=name, address="x"),
                                      {**data, "taken_at": taken_at}).summary
        assert summary_of(data["topology"], data["allocations"]) == want, name
        assert parse(name, taken_at, json.dumps(data)).summary == want


def test_a_generated_fleet_is_listed_whole_in_pages(tmp_path: Path) -> None:
    names = fill(tmp_path / "s.db", 300, vms=3, failed_every=20)
    with serving(tmp_path / "s.db", warm_every=0.2) as url:
        m = samples(get(url + "/metrics").body.decode())
        assert len(m["ppec_host_info"]) == 300
        assert sum(m["ppec_hosts"].values()) == 300
        assert m["ppec_hosts"]['{state="failed"}'] == 15
        assert m["ppec_vms"]['{state="unknown"}'] == 15 * 3
        seen, cursor = [], ""
        while True:
            doc = get(f"{url}/api/v1/hosts?limit=128{cursor}").json()
            seen += [(h["name"], h["state"], h["age_s"] is not None) for h in doc["hosts"]]
            if doc["next_cursor"] is None:
                break
            cursor = f"&cursor={doc['next_cursor']}"
    assert [s[0] for s in seen] == names
    assert {s[1] for s in seen} == {"fresh", "failed"} and all(s[2] for s in seen)
