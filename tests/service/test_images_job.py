"""The images job's decisions (issue 25), through the service's own machinery (`run`
with --once, the leader lock, the pool, job_runs, alerts, the log) over a real store, with
the push itself replaced at the job's seam: which hosts lack which image (push records
and snapshots), drained hosts, failures as alerts that resolve, unknown names, new
versions, the bound on pushes at once, and a stop in the middle of a round."""

from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ppec.core.errors import NoCapacity, PpecError
from ppec.operator import images
from ppec.operator.context import Context
from ppec.operator.store import Host, Store, fleetstate
from ppec.service import main
from ppec.service.jobs.images import SOURCE, Images, lacking
from ppec.service.log import Log
from ppec.service.settings import Settings
from tests.service.test_images_api import qcow2, snap_with


@dataclass
class FakePush:
    """Stands in for imagepush.push: records each call; fails where told; may take time."""

    fail: dict[tuple[str, str], PpecError] = field(default_factory=dict)
    delay: float = 0.0
    gate: threading.Event | None = None
    calls: list[tuple[str, str, int]] = field(default_factory=list)
    running: int = 0
    most: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, ctx: Context, host: Host, image: images.Image) -> dict[str, Any]:
        with self.lock:
            self.calls.append((host.name, image.name, image.version))
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            if self.gate is not None:
                self.gate.wait(30)
            time.sleep(self.delay)
            error = self.fail.get((host.name, image.name))
            if error is not None:
                raise error
            return {"host": host.name, "digest": image.digest, "state": "pushed",
                    "sent": image.file_bytes, "seconds": self.delay, "path": "/x"}
        finally:
            with self.lock:
                self.running -= 1

    def take(self) -> set[tuple[str, str, int]]:
        with self.lock:
            got = set(self.calls)
            self.calls.clear()
        return got


def make_store(db: Path, hosts: int, drained: tuple[str, ...] = ()) -> list[str]:
    store = Store(str(db))
    names = [f"h{i + 1}" for i in range(hosts)]
    for name in names:
        store.add_host(Host(name=name, address="127.0.0.1", drained=name in drained))
    store.close()
    return names


def once(db: Path, push: FakePush, wanted: tuple[str, ...],
         **settings: Any) -> tuple[int, list[dict[str, Any]]]:
    out = io.StringIO()
    s = Settings(db=str(db), once=True, images_everywhere=wanted, **settings)
    code = main.run(s, threading.Event(), Log(out), jobs=[Images(wanted, push=push)])
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


def alerts(db: Path) -> set[tuple[str, str, str, bool]]:
    store = Store(str(db))
    try:
        return {(a.host, a.code, a.object, a.resolved_at is None)
                for a in fleetstate.alerts(store, open_only=False) if a.source == SOURCE}
    finally:
        store.close()


def add(db: Path, name: str, file: Path) -> images.Image:
    store = Store(str(db))
    try:
        return images.add(store, name, file)
    finally:
        store.close()


def test_pushes_what_hosts_lack_alerts_on_failures_and_resolves_them(tmp_path: Path) -> None:
    db = tmp_path / "ppec.db"
    make_store(db, 4, drained=("h4",))
    deb = add(db, "deb", qcow2(tmp_path / "deb.qcow2", "16M"))
    alp = add(db, "alp", qcow2(tmp_path / "alp.qcow2", "8M"))
    push = FakePush(fail={("h2", "alp"): NoCapacity("not enough space in /var/lib/ppec/"
                                                     "images for it", code="NO_SPACE")})
    wanted = ("deb", "alp", "ghost")

    code, log = once(db, push, wanted)
    assert code == 5     # h2 failed a push
    assert push.take() == {(h, n, 1) for h in ("h1", "h2", "h3") for n in ("deb", "alp")}
    store = Store(str(db))
    assert images.hosts_of(store, deb.digest) == ["h1", "h2", "h3"]   # not drained h4
    assert images.hosts_of(store, alp.digest) == ["h1", "h3"]
    run = next(j for j in fleetstate.jobs(store) if j.job == "images")
    assert (run.ok, run.hosts, run.failed, run.error) == (False, 3, 1, "h2")
    failed = next(a for a in fleetstate.alerts(store) if a.code == "IMAGE_PUSH_FAILED")
    assert failed.detail == "NO_SPACE: not enough space in /var/lib/ppec/images for it"
    unknown = next(a for a in fleetstate.alerts(store) if a.code == "IMAGE_UNKNOWN")
    assert unknown.host == "" and "ppec image add ghost FILE" in unknown.detail
    store.close()
    assert alerts(db) == {("h2", "IMAGE_PUSH_FAILED", f"alp@{alp.digest[:12]}", True),
                          ("", "IMAGE_UNKNOWN", "ghost", True)}
    events = [e["event"] for e in log]
    assert events.count("image_pushed") == 5 and events.count("image_push_failed") == 1
    assert events.count("alert_opened") == 2
    done = next(e for e in log if e["event"] == "round_done")
    assert (done["job"], done["hosts"], done["answered"], done["failed"]) == \
        ("images", 3, 2, 1)
    assert next(e for e in log if e["event"] == "started")["intervals"]["images"] == 300

    # The space is freed and ghost is added: only what is missing goes, alerts resolve.
    push.fail.clear()
    ghost = add(db, "ghost", qcow2(tmp_path / "ghost.qcow2", "4M"))
    assert once(db, push, wanted)[0] == 0
    assert push.take() == {("h2", "alp", 1), *((h, "ghost", 1) for h in ("h1", "h2", "h3"))}
    assert alerts(db) == {("h2", "IMAGE_PUSH_FAILED", f"alp@{alp.digest[:12]}", False),
                          ("", "IMAGE_UNKNOWN", "ghost", False)}
    assert images.hosts_of(Store(str(db)), ghost.digest) == ["h1", "h2", "h3"]

    # A new version of deb: the name means it now, so it goes everywhere again.
    add(db, "deb", qcow2(tmp_path / "deb2.qcow2", "32M"))
    assert once(db, push, wanted)[0] == 0
    assert push.take() == {(h, "deb", 2) for h in ("h1", "h2", "h3")}
    # Nothing missing: no push at all, and the round asked no host.
    code, log = once(db, push, wanted)
    assert code == 0 and push.take() == set()
    assert next(e for e in log if e["event"] == "round_done")["hosts"] == 0


def test_snapshots_say_where_images_are(tmp_path: Path) -> None:
    db = tmp_path / "ppec.db"
    make_store(db, 5)
    deb = add(db, "deb", qcow2(tmp_path / "deb.qcow2", "16M"))
    store = Store(str(db))
    now = time.time()
    snap_with(store, "h1", now, [deb.digest])          # there, never pushed by ppec
    for h in ("h2", "h3"):
        images.record_host(store, deb.digest, h)
    snap_with(store, "h2", now + 10, [])                # pushed, gone since
    snap_with(store, "h3", now - 100, [])               # pushed after this snapshot
    snap_with(store, "h4", now, None)                   # an older agent: no list
    plan = lacking(store, store.hosts(), [deb])
    store.close()
    assert sorted(plan) == ["h2", "h4", "h5"]
    push = FakePush()
    assert once(db, push, ("deb",))[0] == 0
    assert push.take() == {("h2", "deb", 1), ("h4", "deb", 1), ("h5", "deb", 1)}


def test_the_plan_on_each_backend(store_url: str, tmp_path: Path) -> None:
    """The store finds digests in the snapshots' text (instr on SQLite, strpos on
    PostgreSQL) without reading it back."""
    store = Store(store_url)
    try:
        for name in ("h1", "h2", "h3"):
            store.add_host(Host(name=name, address="127.0.0.1"))
        deb = images.add(store, "deb", qcow2(tmp_path / "deb.qcow2", "16M"))
        alp = images.add(store, "alp", qcow2(tmp_path / "alp.qcow2", "8M"))
        snap_with(store, "h1", time.time(), [deb.digest, alp.digest])
        snap_with(store, "h2", time.time(), [alp.digest])
        images.record_host(store, deb.digest, "h3")
        plan = lacking(store, store.hosts(), [deb, alp])
        assert {h: [i.name for i in todo] for h, todo in plan.items()} == {
            "h2": ["deb"], "h3": ["alp"]}
    finally:
        store.close()


def test_pushes_at_once_are_bounded_by_the_pool(tmp_path: Path) -> None:
    db = tmp_path / "ppec.db"
    make_store(db, 6)
    add(db, "deb", qcow2(tmp_path / "deb.qcow2", "16M"))
    push = FakePush(delay=0.3)
    assert once(db, push, ("deb",), image_pushes=2, workers=8)[0] == 0
    assert len(push.take()) == 6 and push.most == 2
    store = Store(str(db))
    with store.transaction() as tx:
        tx.execute("DELETE FROM image_hosts")
    store.close()
    push.most = 0
    assert once(db, push, ("deb",), image_pushes=4, workers=2)[0] == 0
    assert len(push.take()) == 6 and push.most == 2    # never more than the workers


def test_a_stop_mid_round_abandons_pushes_without_alerts(tmp_path: Path) -> None:
    db = tmp_path / "ppec.db"
    make_store(db, 4)
    deb = add(db, "deb", qcow2(tmp_path / "deb.qcow2", "16M"))
    gate = threading.Event()
    push = FakePush(gate=gate, fail={(h, "deb"): PpecError("connection closed", code="X")
                                     for h in ("h1", "h2", "h3", "h4")})
    settings = Settings(db=str(db), images_everywhere=("deb",), image_pushes=2,
                        stop_grace=0.5, images_interval=3600)
    stop = threading.Event()
    out = io.StringIO()
    t = threading.Thread(target=main.run, args=(settings, stop, Log(out)),
                         kwargs={"jobs": [Images(("deb",), push=push)]})
    t.start()
    deadline = time.monotonic() + 30
    while push.running < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert push.running == 2
    stop.set()
    t.join(20)
    gate.set()
    assert not t.is_alive()
    assert len(push.take()) == 2            # the other two hosts were never started
    assert alerts(db) == set()              # abandoned, not failed
    store = Store(str(db))
    assert images.hosts_of(store, deb.digest) == []
    store.close()


def test_the_job_runs_when_wanted_or_to_resolve_what_it_left(tmp_path: Path) -> None:
    db = tmp_path / "ppec.db"
    make_store(db, 2)
    s = Settings(db=str(db))
    store = Store(str(db))
    try:
        assert [j.name for j in main.default_jobs(s, store)] == [
            "snapshots", "drift", "agent_files"]
        assert main.default_jobs(replace(s, images_everywhere=("deb",)), store)[-1].name \
            == "images"
        fleetstate.sync_alerts(store, "h1", SOURCE, [("IMAGE_PUSH_FAILED", "deb@x", "")], 1.0)
        fleetstate.sync_alerts(store, "", SOURCE, [("IMAGE_UNKNOWN", "deb", "")], 1.0)
        jobs = main.default_jobs(s, store)
        assert jobs[-1].name == "images"
    finally:
        store.close()
    # With nothing wanted any more, its round resolves what it opened.
    code = main.run(replace(s, once=True), threading.Event(), Log(io.StringIO()),
                    jobs=[jobs[-1]])
    assert code == 0
    assert alerts(db) == {("h1", "IMAGE_PUSH_FAILED", "deb@x", False),
                          ("", "IMAGE_UNKNOWN", "deb", False)}


def test_an_image_file_gone_from_this_machine_is_one_fleet_alert(tmp_path: Path) -> None:
    db = tmp_path / "ppec.db"
    make_store(db, 3)
    deb = add(db, "deb", qcow2(tmp_path / "deb.qcow2", "16M"))
    (tmp_path / "deb.qcow2").unlink()
    push = FakePush()
    assert once(db, push, ("deb",))[0] == 0
    assert push.take() == set()
    assert alerts(db) == {("", "IMAGE_SOURCE", f"deb@{deb.digest[:12]}", True)}
