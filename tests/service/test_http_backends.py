"""The HTTP side's own queries on both store backends: SQLite and PostgreSQL."""

from __future__ import annotations

from ppec.operator.store import Store, fleetstate
from tests.service.http_support import fill, get, serving


def test_pages_metrics_and_facts_on_each_backend(store_url: str) -> None:
    names = fill(store_url, 30, vms=2, failed_every=10)
    store = Store(store_url)
    fleetstate.sync_alerts(store, names[0], "drift", [("DOMAIN_MISSING", "x", "")], 1.0)
    fleetstate.record_job(store, "snapshots", 1.0, 0.5, True, hosts=30)
    store.close()
    with serving(store_url, warm_every=0.5) as url:
        seen, cursor = [], ""
        while True:
            doc = get(f"{url}/api/v1/hosts?limit=7{cursor}").json()
            seen += [h["name"] for h in doc["hosts"]]
            if doc["next_cursor"] is None:
                break
            cursor = f"&cursor={doc['next_cursor']}"
        assert seen == names
        failed = get(f"{url}/api/v1/hosts?state=failed").json()["hosts"]
        assert [h["name"] for h in failed] == names[::10]
        vms = get(f"{url}/api/v1/vms?state=unknown&limit=1000").json()["vms"]
        assert {v["host"] for v in vms} == set(names[::10]) and len(vms) == 6
        assert get(f"{url}/api/v1/hosts/{names[3]}").json()["numa"]["nodes"]
        metrics = get(f"{url}/metrics").body.decode()
        assert metrics.count("ppec_host_info{") == 30
        assert 'ppec_alerts_open{code="DOMAIN_MISSING"} 1' in metrics
        health = get(f"{url}/api/v1/health").json()
        assert health["hosts"] == {"total": 30, "failed": 3, "without_snapshot": 0}
        assert get(f"{url}/api/v1/capacity?flavor=small&by=region").json()["total"]["hosts"]
        assert get(f"{url}/api/v1/audit").json()["state"] == "intact"
        for page in ("/", "/vms", "/capacity", "/alerts", "/requests", "/audit",
                     f"/hosts/{names[0]}"):
            assert get(url + page).status == 200, page
