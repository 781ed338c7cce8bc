"""The JSON API over a store filled the way the service fills it: real agents on
libvirt's test driver, VMs made with `ppec vm create`, snapshots from `ppec sync` and from
`host.snapshot` through AgentClient recorded with fleetstate.record_round, alerts with
fleetstate.sync_alerts, a pending request made by `ppec vm delete` under a policy."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ppec.operator import config as ppec_config
from ppec.operator.fleet.client import AgentClient, Reach
from ppec.operator.store import Store, fleetstate
from ppec.service.http.pages import encode
from tests.policy import as_, install_policy, make_people
from tests.realparts import Agent, Cli
from tests.service.http_support import get, serving


@dataclass
class Fleet:
    cli: Cli
    url: str
    agents: dict[str, Agent]
    config: Path
    failed_at: float


def _record(cli: Cli, agents: dict[str, Agent]) -> float:
    """What the service's jobs write: t1 answered a round (its snapshot asked through
    AgentClient), t2 and t3 failed one; an open drift alert on t1; a job run."""
    store = Store(str(cli.db))
    try:
        t1 = store.host("t1")
        client = AgentClient(t1, Reach(known_hosts=cli.db.parent / "known_hosts"))
        snap = client.call("host.snapshot")
        client.close()
        now = time.time()
        fleetstate.record_round(
            store, [fleetstate.Success("t1", float(snap["taken_at"]), snap)],
            [fleetstate.Failure("t2", "UNREACHABLE", "connection refused"),
             fleetstate.Failure("t3", "UNREACHABLE", "no agent socket")], now)
        fleetstate.sync_alerts(store, "t1", "drift", [
            ("DOMAIN_MISSING", "ghost", "in the ledger, gone from libvirt")], now)
        fleetstate.record_job(store, "snapshots", now - 2.0, 1.5, False, hosts=3, failed=2,
                              error="2 hosts failed")
        return now
    finally:
        store.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("http-api")
    people = make_people(root)
    cli = Cli(root / "operator")
    install_policy(cli, root, people)
    agents = {n: Agent(root / n, host=n, libvirt_uri="test:///default").start()
              for n in ("t1", "t2", "t3")}
    try:
        for name, region, rack in (("t1", "eu", "r1"), ("t2", "us", "r2"), ("t3", "us", "r3")):
            cli.ok("host", "add", name, "--address", "local", "--socket",
                   str(agents[name].socket), "--region", region, "--rack", rack)
        agents["t3"].kill()   # added, then gone before its first snapshot
        cli.ok("vm", "create", "ded-1", "--cpus", "4", "--memory", "1G", "--disk", "1G",
               "--numa", "dedicated", "--host", "t1")
        cli.ok("vm", "create", "sh-1", "--cpus", "2", "--memory", "512M", "--disk", "1G",
               "--host", "t1")
        cli.ok("vm", "create", "web-2", "--flavor", "tiny", "--host", "t2")
        assert cli.run("sync").returncode == 5          # t3 has no agent
        held = as_(cli, people["alice"], "vm", "delete", "web-2", "-o", "json")
        assert held.returncode == 4, held  # type: ignore[attr-defined]
        failed_at = _record(cli, agents)
        config = Path(cli.env["PPEC_CONFIG"])
        with serving(cli.db, config=ppec_config.load(config), warm_every=None) as url:
            yield Fleet(cli, url, agents, config, failed_at)
    finally:
        for agent in agents.values():
            agent.kill()


def api(fleet: Fleet, path: str) -> dict:  # type: ignore[type-arg]
    answer = get(fleet.url + path)
    assert answer.status == 200, (path, answer.status, answer.body[:500])
    assert answer.headers["content-type"].startswith("application/json")
    return answer.json()  # type: ignore[no-any-return]


def test_hosts_carry_the_agents_snapshots_and_their_reachability(fleet: Fleet) -> None:
    doc = api(fleet, "/api/v1/hosts")
    assert doc["next_cursor"] is None and doc["as_of"] > 0
    hosts = {h["name"]: h for h in doc["hosts"]}
    assert list(hosts) == ["t1", "t2", "t3"]
    t1 = hosts["t1"]
    assert (t1["state"], t1["region"], t1["rack"], t1["drained"]) == ("fresh", "eu", "r1",
                                                                      False)
    assert 0 <= t1["age_s"] < 600 and t1["status"]["state"] == "ok"
    # test:///default: 16 CPUs in 2 cells, 6 GiB; ded-1 holds 4 CPUs and 1 GiB of node 0
    assert t1["cpu"] == {**t1["cpu"], "total": 16, "dedicated": 4, "free": 12,
                         "shared_vcpus": 2}
    assert t1["memory"] == {"total_mib": 6144, "used_mib": 1536, "free_mib": 4608}
    assert t1["vm_count"] == 2 and t1["numa_nodes"] == 2
    assert t1["storage"]["free_bytes"] > 0
    assert hosts["t2"]["state"] == "failed"
    assert hosts["t2"]["status"]["error_code"] == "UNREACHABLE"
    assert hosts["t2"]["age_s"] is not None    # its last snapshot is still there, and aged
    assert hosts["t3"]["state"] == "failed" and hosts["t3"]["cpu"] is None


def test_host_pages_follow_the_cursor_to_the_end(fleet: Fleet) -> None:
    names, cursor, pages = [], None, 0
    while True:
        doc = api(fleet, "/api/v1/hosts?limit=1" + (f"&cursor={cursor}" if cursor else ""))
        assert len(doc["hosts"]) <= 1 and doc["limit"] == 1
        names += [h["name"] for h in doc["hosts"]]
        pages += 1
        cursor = doc["next_cursor"]
        if cursor is None:
            break
    assert names == ["t1", "t2", "t3"] and pages == 3
    two = api(fleet, "/api/v1/hosts?limit=2")
    assert [h["name"] for h in two["hosts"]] == ["t1", "t2"] and two["next_cursor"]
    rest = api(fleet, f"/api/v1/hosts?limit=2&cursor={two['next_cursor']}")
    assert [h["name"] for h in rest["hosts"]] == ["t3"] and rest["next_cursor"] is None
    past = api(fleet, f"/api/v1/hosts?cursor={encode('zzz')}")
    assert past["hosts"] == [] and past["next_cursor"] is None


@pytest.mark.parametrize(("query", "names"), [
    ("region=us", ["t2", "t3"]), ("rack=r1", ["t1"]), ("state=failed", ["t2", "t3"]),
    ("state=fresh", ["t1"]), ("state=none", []), ("region=us&rack=r3", ["t3"]),
])
def test_host_filters(fleet: Fleet, query: str, names: list[str]) -> None:
    assert [h["name"] for h in api(fleet, f"/api/v1/hosts?{query}")["hosts"]] == names


@pytest.mark.parametrize(("path", "code"), [
    ("/api/v1/hosts?cursor=not-a-cursor", "BAD_CURSOR"),
    ("/api/v1/hosts?cursor=%7B%7D", "BAD_CURSOR"),
    (f"/api/v1/vms?cursor={encode('x')[:-3]}", "BAD_CURSOR"),
    ("/api/v1/alerts?cursor=e30", "BAD_CURSOR"),
    (f"/api/v1/alerts?cursor={encode('t1')}", "BAD_CURSOR"),
    ("/api/v1/hosts?limit=0", "BAD_INPUT"),
    ("/api/v1/hosts?limit=1001", "BAD_INPUT"),
    ("/api/v1/hosts?limit=ten", "BAD_INPUT"),
    ("/api/v1/hosts?state=asleep", "BAD_INPUT"),
    ("/api/v1/capacity?flavor=huge", "NOT_FOUND"),
    ("/api/v1/capacity?cpus=2&memory=12Q", "BAD_SIZE"),
    ("/api/v1/capacity?by=planet", "BAD_INPUT"),
])
def test_bad_input_is_400_json(fleet: Fleet, path: str, code: str) -> None:
    answer = get(fleet.url + path)
    assert answer.status == 400, (path, answer.status, answer.body)
    error = answer.json()["error"]
    assert error["code"] == code and error["message"]
    assert b"Traceback" not in answer.body


@pytest.mark.parametrize("path", ["/api/v1/nothing", "/api/v2/hosts", "/nope", "/favicon.ico",
                                  "/api/v1/hosts/t9", "/api/v1/vms/none", "/hosts/t9"])
def test_unknown_paths_and_names_are_404_json(fleet: Fleet, path: str) -> None:
    answer = get(fleet.url + path)
    assert answer.status == 404
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["error"]["code"] == "NOT_FOUND"


def test_the_api_is_read_only(fleet: Fleet) -> None:
    import urllib.request
    request = urllib.request.Request(fleet.url + "/api/v1/hosts", data=b"{}", method="POST")
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("POST was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 405
        assert json.loads(e.read())["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_host_detail_draws_the_agents_numa_nodes(fleet: Fleet) -> None:
    doc = api(fleet, "/api/v1/hosts/t1")
    assert doc["name"] == "t1" and doc["as_of"] > 0
    client = AgentClient(Store(str(fleet.cli.db)).host("t1"),
                         Reach(known_hosts=fleet.cli.db.parent / "known_hosts"))
    numa = client.call("host.numa")   # the agent's own account, not ppec's store
    client.close()
    assert [n["node"] for n in doc["numa"]["nodes"]] == [n["node"] for n in numa["nodes"]]
    for mine, theirs in zip(doc["numa"]["nodes"], numa["nodes"], strict=True):
        assert mine["free_cpus"] == theirs["free"]
        assert mine["free_mib"] == theirs["free_mib"]
        held = {c["vm"] for c in mine["cpus"] if c["vm"]}
        assert held == ({"ded-1"} if theirs["dedicated"] else set())
    ded = [c["id"] for n in doc["numa"]["nodes"] for c in n["cpus"] if c["vm"] == "ded-1"]
    assert len(ded) == 4
    assert doc["numa"]["shared"]["vms"] == numa["shared"]["vms"] == ["sh-1"]
    assert {v["name"]: v["cpus"] for v in doc["vms"]} == {"ded-1": ded, "sh-1": []}


def test_vms_on_a_failed_host_are_unknown_with_last_seen(fleet: Fleet) -> None:
    doc = api(fleet, "/api/v1/vms")
    vms = {v["name"]: v for v in doc["vms"]}
    assert list(vms) == ["ded-1", "sh-1", "web-2"] and doc["next_cursor"] is None
    assert vms["ded-1"]["state"] == "running" and vms["ded-1"]["state_from"] == "snapshot"
    assert vms["ded-1"]["numa"] == "dedicated" and len(vms["ded-1"]["cpus"]) == 4
    web = vms["web-2"]
    assert web["state"] == "unknown" and web["state_from"] == "host failed"
    assert web["last_seen"] == web["taken_at"] and web["last_seen"] < fleet.failed_at
    unknown = api(fleet, "/api/v1/vms?state=unknown")["vms"]
    assert [v["name"] for v in unknown] == ["web-2"]
    assert api(fleet, "/api/v1/vms?state=stopped")["vms"] == []
    assert [v["name"] for v in api(fleet, "/api/v1/vms?host=t1")["vms"]] == ["ded-1", "sh-1"]
    one = api(fleet, "/api/v1/vms?limit=1&state=running")
    assert [v["name"] for v in one["vms"]] == ["ded-1"] and one["next_cursor"]
    two = api(fleet, f"/api/v1/vms?limit=1&state=running&cursor={one['next_cursor']}")
    assert [v["name"] for v in two["vms"]] == ["sh-1"] and two["next_cursor"] is None
    assert api(fleet, "/api/v1/vms/web-2")["state"] == "unknown"


def test_capacity_is_what_the_cli_reports(fleet: Fleet) -> None:
    for query, args in (("flavor=small&by=region", ["--flavor", "small", "--by", "region"]),
                        ("cpus=2&memory=1G&numa=dedicated&by=numa",
                         ["--cpus", "2", "--memory", "1G", "--numa", "dedicated", "--by",
                          "numa"]),
                        ("by=host", ["--by", "host"])):
        mine = api(fleet, f"/api/v1/capacity?{query}")
        theirs = json.loads(fleet.cli.ok("capacity", *args, "-o", "json").stdout)
        assert mine["groups"] == theirs["groups"], query
        assert mine["total"] == theirs["total"] and mine["excluded"] == theirs["excluded"]
    flavors = api(fleet, "/api/v1/capacity/flavors")["flavors"]
    small = next(f for f in flavors if f["flavor"] == "small")
    cli_small = json.loads(fleet.cli.ok("capacity", "--flavor", "small", "--by", "rack",
                                        "-o", "json").stdout)
    assert small["fits"] == cli_small["total"]["fits"]
    assert sum(small["by_rack"].values()) == small["fits"] == sum(small["by_region"].values())


def test_alerts_open_and_resolved(fleet: Fleet) -> None:
    doc = api(fleet, "/api/v1/alerts")
    assert [(a["host"], a["code"], a["object"], a["state"]) for a in doc["alerts"]] == [
        ("t1", "DOMAIN_MISSING", "ghost", "open")]
    assert doc["alerts"][0]["age_s"] >= 0
    assert api(fleet, "/api/v1/alerts?state=resolved")["alerts"] == []
    assert api(fleet, "/api/v1/alerts?host=t2")["alerts"] == []


def test_pending_requests_say_the_exact_approve_command(fleet: Fleet) -> None:
    doc = api(fleet, "/api/v1/requests")
    [request] = doc["requests"]
    assert (request["state"], request["operation"], request["resource"]) == (
        "pending", "vm.delete", "web-2")
    assert request["approve"] == f"ppec request approve {request['id']}"
    listed = json.loads(fleet.cli.ok("request", "list", "--state", "pending", "-o",
                                     "json").stdout)["requests"]
    assert [r["id"] for r in listed] == [request["id"]]


def test_audit_state_and_health(fleet: Fleet) -> None:
    audit = api(fleet, "/api/v1/audit")
    assert audit["state"] == "intact" and audit["entries"] >= 1
    assert audit["head"]["seq"] == audit["entries"]
    health = api(fleet, "/api/v1/health")
    assert health["hosts"] == {"total": 3, "failed": 2, "without_snapshot": 1}
    [job] = health["jobs"]
    assert (job["job"], job["ok"], job["failed"], job["runs"], job["failures"]) == (
        "snapshots", False, 2, 1, 1)
    assert health["leader"] is None


def test_openapi_documents_every_route(fleet: Fleet) -> None:
    doc = api(fleet, "/api/v1/openapi.json")
    paths = set(doc["paths"])
    assert {"/api/v1/hosts", "/api/v1/hosts/{name}", "/api/v1/vms", "/api/v1/vms/{name}",
            "/api/v1/capacity", "/api/v1/capacity/flavors", "/api/v1/alerts",
            "/api/v1/requests", "/api/v1/audit", "/api/v1/health"} <= paths
    params = {p["name"] for p in doc["paths"]["/api/v1/hosts"]["get"]["parameters"]}
    assert params == {"limit", "cursor", "region", "rack", "state"}


def test_a_broken_audit_chain_shows_where(fleet: Fleet, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    with sqlite3.connect(fleet.cli.db) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    with sqlite3.connect(copy) as db:
        db.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 1")
    with serving(copy, config=ppec_config.load(fleet.config), warm_every=None) as url:
        doc = get(url + "/api/v1/audit").json()
    assert doc["state"] == "broken" and doc["seq"] == 1 and "altered" in doc["error"]


def test_an_internal_error_is_500_json_without_a_traceback(fleet: Fleet,
                                                           tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    with sqlite3.connect(fleet.cli.db) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    with sqlite3.connect(copy) as db:   # a row no agent wrote: the parse fails
        db.execute("UPDATE snapshots SET data = '{\"topology\": 7', "
                   "placement = '{\"topology\": 7' WHERE host = 't1'")
    with serving(copy, config=ppec_config.load(fleet.config), warm_every=None) as url:
        for path in ("/api/v1/hosts", "/api/v1/hosts/t1", "/metrics", "/"):
            answer = get(url + path)
            assert answer.status == 500, (path, answer.status)
            assert answer.json() == {"error": {
                "code": "INTERNAL",
                "message": "internal error (the service's log has the details)"}}
        assert get(url + "/api/v1/alerts").status == 200   # the rest still answers
