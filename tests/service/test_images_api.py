"""The image catalogue over HTTP (issue 25): /api/v1/images, /api/v1/images/NAME, the
host's images, the Images page, the host page and /metrics, from a store filled with
`images.add` (real qcow2 files made by qemu-img), `images.record_host` and snapshots in
the real agent's shape that list images, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ppec.operator import images
from ppec.operator.store import Store, fleetstate
from tests.service.http_support import fill, get, serving, snapshot


def qcow2(path: Path, size: str) -> Path:
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(path), size], check=True,
                   capture_output=True)
    return path


def snap_with(store: Store, host: str, taken_at: float, digests: list[str] | None) -> None:
    """A new snapshot of ``host`` (the real agent's shape) listing ``digests`` as its
    images; None: an agent older than images, whose snapshot has no list."""
    data = snapshot(host, random.Random(host), taken_at, 2)
    if digests is not None:
        data["images"] = [{"digest": d, "size": 1 << 20} for d in digests]
    fleetstate.record_round(store, [fleetstate.Success(host, taken_at, data)], [], taken_at)


def name_vm(store: Store, vm: str, doc: dict[str, object]) -> None:
    with store.transaction() as db:
        db.execute("UPDATE vms SET spec=?, updated_at=? WHERE name=?",
                   (json.dumps(doc), str(time.time()), vm))


@dataclass
class Catalogue:
    hosts: list[str]
    deb1: images.Image
    deb2: images.Image
    alpine: images.Image
    kernel: images.Image
    stray: str          # a digest h3 holds that the catalogue does not have


def build(url: str, tmp: Path) -> Catalogue:
    hosts = fill(url, 4, vms=2)
    store = Store(url)
    try:
        deb1 = images.add(store, "debian12", qcow2(tmp / "d1.qcow2", "16M"),
                          os_user="debian", description="Debian 12 generic")
        deb2 = images.add(store, "debian12", qcow2(tmp / "d2.qcow2", "32M"))
        alpine = images.add(store, "alpine", qcow2(tmp / "a.qcow2", "8M"))
        (tmp / "vmlinuz").write_bytes(b"\x7fkernel" * 1000)
        kernel = images.add(store, "vmlinuz", tmp / "vmlinuz", kind="kernel")
        h0, h1, h2, h3 = hosts
        images.record_host(store, deb1.digest, h0)
        images.record_host(store, deb2.digest, h0)
        images.record_host(store, deb2.digest, h1)
        later = time.time() + 10
        snap_with(store, h1, later, [])                  # pushed, then gone from h1
        snap_with(store, h2, later, [deb2.digest])       # there, without a push record
        stray = "ab" * 32
        snap_with(store, h3, later, [stray])
        name_vm(store, f"{h0}-vm000", {"image": images.ref(deb1.digest)})
        name_vm(store, f"{h1}-vm000", {"image": images.ref(deb2.digest),
                                       "boot": {"kernel": images.ref(kernel.digest)}})
    finally:
        store.close()
    return Catalogue(hosts, deb1, deb2, alpine, kernel, stray)


def test_the_catalogue_api_pages_and_metrics(store_url: str, tmp_path: Path) -> None:
    c = build(store_url, tmp_path)
    h0, h1, h2, _ = c.hosts
    with serving(store_url, warm_every=0.5) as url:
        doc = get(f"{url}/api/v1/images").json()
        assert doc["as_of"] > 0 and doc["next_cursor"] is None
        rows = doc["images"]
        assert [(r["name"], r["version"]) for r in rows] == [
            ("alpine", 1), ("debian12", 2), ("debian12", 1), ("vmlinuz", 1)]
        deb2, deb1 = rows[1], rows[2]
        assert deb2["digest"] == c.deb2.digest and deb2["newest"] and not deb1["newest"]
        assert (deb2["kind"], deb2["format"], deb2["virtual_bytes"]) == ("disk", "qcow2",
                                                                        32 << 20)
        assert deb2["file_bytes"] == c.deb2.file_bytes and "source" not in deb2
        assert (deb1["os_user"], deb1["description"]) == ("debian", "Debian 12 generic")
        assert deb1["added_at"] == c.deb1.added_at
        # h0: pushed, its snapshot has no list (an older agent); h1: pushed, but its newer
        # snapshot lists images without it; h2: its snapshot lists it, never pushed.
        assert deb2["hosts"] == [h0, h2]
        where = {w["host"]: w for w in deb2["where"]}
        assert set(where) == {h0, h1, h2}
        assert (where[h0]["held"], where[h0]["in_snapshot"]) == (True, None)
        assert where[h0]["recorded_at"] and where[h0]["age_s"] >= 0
        assert (where[h1]["held"], where[h1]["in_snapshot"]) == (False, False)
        assert (where[h2]["held"], where[h2]["in_snapshot"], where[h2]["recorded_at"]) == \
            (True, True, None)
        assert where[h2]["taken_at"] > time.time()
        assert deb2["vms"] == [f"{h1}-vm000"] and deb1["vms"] == [f"{h0}-vm000"]
        assert deb1["hosts"] == [h0]
        assert rows[3]["kind"] == "kernel" and rows[3]["format"] == "raw"
        assert rows[3]["vms"] == [f"{h1}-vm000"]
        assert rows[0]["hosts"] == [] and rows[0]["where"] == [] and rows[0]["vms"] == []

        _pages_of_the_list(url, rows)
        one = get(f"{url}/api/v1/images/debian12").json()
        assert one["name"] == "debian12" and one["as_of"] > 0
        assert [v["version"] for v in one["versions"]] == [2, 1]
        assert one["versions"][0]["hosts"] == [h0, h2]
        missing = get(f"{url}/api/v1/images/nope")
        assert missing.status == 404 and missing.json()["error"]["code"] == "NOT_FOUND"

        _host_images(url, c)
        _html(url, c)
        metrics = get(f"{url}/metrics").body.decode()
        assert f'ppec_host_images{{host="{h2}"}} 1\n' in metrics
        assert f'ppec_host_images{{host="{h1}"}} 0\n' in metrics
        assert f'ppec_host_images{{host="{h0}"}}' not in metrics   # no list: no sample

        store = Store(store_url)   # a new push shows at once (the cached list is keyed on it)
        images.record_host(store, c.alpine.digest, h0)
        store.close()
        assert get(f"{url}/api/v1/images/alpine").json()["versions"][0]["hosts"] == [h0]


def _pages_of_the_list(url: str, rows: list[dict[str, object]]) -> None:
    seen, cursor = [], ""
    while True:
        doc = get(f"{url}/api/v1/images?limit=1{cursor}").json()
        assert doc["limit"] == 1 and len(doc["images"]) <= 1
        seen += [(r["name"], r["version"]) for r in doc["images"]]
        if doc["next_cursor"] is None:
            break
        cursor = f"&cursor={doc['next_cursor']}"
    assert seen == [(r["name"], r["version"]) for r in rows]
    two = get(f"{url}/api/v1/images?limit=2").json()
    rest = get(f"{url}/api/v1/images?limit=2&cursor={two['next_cursor']}").json()
    assert [r["digest"] for r in two["images"] + rest["images"]] == \
        [r["digest"] for r in rows] and rest["next_cursor"] is None
    bad = get(f"{url}/api/v1/images?cursor=zzz")
    assert bad.status == 400 and bad.json()["error"]["code"] == "BAD_CURSOR"
    assert get(f"{url}/api/v1/images?limit=0").status == 400
    assert get(f"{url}/api/v1/openapi.json").json()["paths"]["/api/v1/images/{name}"]


def _host_images(url: str, c: Catalogue) -> None:
    h0, h1, h2, h3 = c.hosts
    on = {i["digest"]: i for i in get(f"{url}/api/v1/hosts/{h0}").json()["images"]}
    assert set(on) == {c.deb1.digest, c.deb2.digest}
    assert on[c.deb1.digest]["names"] == [{"name": "debian12", "version": 1,
                                           "newest": False, "kind": "disk",
                                           "file_bytes": c.deb1.file_bytes}]
    assert on[c.deb2.digest]["held"] and on[c.deb2.digest]["in_snapshot"] is None
    gone = get(f"{url}/api/v1/hosts/{h1}").json()["images"]
    assert [(i["digest"], i["held"], i["in_snapshot"]) for i in gone] == [
        (c.deb2.digest, False, False)]
    stray = get(f"{url}/api/v1/hosts/{h3}").json()["images"]
    assert [(i["digest"], i["names"], i["held"], i["size"], i["age_s"] is not None)
            for i in stray] == [(c.stray, [], True, 1 << 20, True)]
    assert get(f"{url}/api/v1/hosts/{h2}").json()["images"][0]["names"][0]["newest"]


def _html(url: str, c: Catalogue) -> None:
    h0, h1, h2, h3 = c.hosts
    fleet = get(url + "/").body.decode()
    assert '<a href="/images"' in fleet
    page = get(f"{url}/images").body.decode()
    row = re.search(r'<tr data-image="debian12" data-version="2".*?</tr>', page, re.S)
    assert row is not None, page
    text = row.group(0)
    assert c.deb2.digest[:12] in text and "v2" in text and "32.0 MiB" in text
    assert f'href="/hosts/{h0}"' in text and f'href="/hosts/{h2}"' in text
    assert "gone from the latest snapshot" in text and f"{h1}-vm000" in text
    assert 'class="on">Images' in page
    assert "Debian 12 generic" in page and "kernel" in page
    live = get(f"{url}/images?fragment=1").body.decode()
    assert "<html" not in live and 'data-image="alpine"' in live
    one = get(f"{url}/images/debian12").body.decode()
    assert "Image debian12" in one and 'data-image="alpine"' not in one
    assert get(f"{url}/images/nope").status == 404
    host = get(f"{url}/hosts/{h3}").body.decode()
    assert 'id="host-images"' in host and "not in the catalogue" in host
    assert c.stray[:12] in host
    gone = get(f"{url}/hosts/{h1}").body.decode()
    assert re.search(rf'data-digest="{c.deb2.digest}" class="gone"', gone)
    held = get(f"{url}/hosts/{h0}").body.decode()
    assert 'href="/images/debian12"' in held and "(older)" in held
