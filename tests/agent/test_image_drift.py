"""Base images checked where they are held (issue 25): a real agent hashes every image in
its by-digest store again each ``verify_interval``; one that no longer hashes to its name
is the drift alert IMAGE_CHANGED, one a VM in the ledger uses but the store lacks is
IMAGE_MISSING. Both show in `ppec alerts` (exit 10) and resolve once the image is back.
The last tests drive ``ImageWatch`` and the store's VM lookup directly: which passes read
a file again, and which ledger references name an image."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ppec.agent.images import ImageStore
from ppec.agent.ledger import VmRecord
from ppec.agent.verify import FULL_EVERY, ImageWatch
from tests.agent.test_images import Conn, push, sha
from tests.realparts import Agent, Cli, wait_until

MiB = 1 << 20
IMAGE_CODES = {"IMAGE_CHANGED", "IMAGE_MISSING"}


@pytest.fixture
def agent(image_agent: Callable[..., Agent]) -> Agent:
    return image_agent(verify_interval=1, drift_interval=0)


@pytest.fixture
def fleet(cli: Cli, agent: Agent) -> Cli:
    cli.ok("host", "add", "h", "--address", "local", "--socket", str(agent.socket))
    return cli


def image_alerts(cli: Cli) -> tuple[int, list[dict[str, Any]]]:
    """`ppec alerts`' exit code and its image alerts."""
    done = cli.run("alerts", "-o", "json")
    assert done.returncode in (0, 10), (done.returncode, done.stderr)
    return done.returncode, [a for a in json.loads(done.stdout)["alerts"]
                             if a["code"] in IMAGE_CODES]


def wait_for(cli: Cli, want: list[tuple[str, str]], timeout: float = 15
             ) -> list[dict[str, Any]]:
    """Poll `ppec alerts` until its image alerts are ``want`` ((code, object) each)."""
    seen: list[dict[str, Any]] = []

    def check() -> bool:
        nonlocal seen
        seen = image_alerts(cli)[1]
        return sorted((a["code"], a["object"]) for a in seen) == sorted(want)
    wait_until(check, timeout=timeout, what=f"image alerts {want}")
    return seen


def test_a_changed_image_is_reported_until_restored(fleet: Cli, agent: Agent,
                                                     images: Path) -> None:
    data = os.urandom(MiB + 3)
    digest = sha(data)
    assert push(agent, data)[1]["ok"] is True
    final = images / "by-digest" / digest
    fleet.ok("vm", "create", "on-img", "--cpus", "1", "--memory", "64M", "--disk", "16M",
             "--image", str(final))
    time.sleep(2.5)   # passes at start and after: a good image is no alert
    assert image_alerts(fleet) == (0, [])

    # Someone makes it writable and flips one byte.
    final.chmod(0o644)
    bad = bytearray(data)
    bad[12345] ^= 0x01
    with final.open("r+b") as f:
        f.seek(12345)
        f.write(bad[12345:12346])
    [alert] = wait_for(fleet, [("IMAGE_CHANGED", digest)], timeout=10)
    assert alert["detail"] == (f"{final} hashes to {sha(bytes(bad))} now (mode 0644: "
                               f"writable); 1 VM(s) backed by it: on-img")
    assert alert["host"] == "h" and alert["first_seen"]
    assert image_alerts(fleet)[0] == 10
    assert "IMAGE_CHANGED" in agent.log()

    # Put back as it was: the next pass finds it right, the alert resolves.
    with final.open("r+b") as f:
        f.seek(12345)
        f.write(data[12345:12346])
    final.chmod(0o444)
    wait_for(fleet, [], timeout=10)
    assert image_alerts(fleet) == (0, [])

    # A file touched but not changed (new mtime and ctime, same bytes) is no alert.
    os.utime(final, ns=(1, 1))
    time.sleep(2.5)
    assert image_alerts(fleet) == (0, [])
    assert stat.S_IMODE(final.stat().st_mode) == 0o444


def test_an_image_no_vm_uses_changed_is_reported_too(fleet: Cli, agent: Agent,
                                                      images: Path) -> None:
    data = os.urandom(2 * MiB)
    digest = sha(data)
    assert push(agent, data)[1]["ok"] is True
    final = images / "by-digest" / digest
    final.unlink()   # replaced behind the agent's back: a new inode, other bytes
    final.write_bytes(data[:-1] + b"x")
    final.chmod(0o444)
    [alert] = wait_for(fleet, [("IMAGE_CHANGED", digest)], timeout=10)
    assert alert["detail"] == (f"{final} hashes to {sha(data[:-1] + b'x')} now; "
                               f"no VM backed by it")
    # Removed (no VM uses it): nothing to report.
    final.unlink()
    wait_for(fleet, [])


def test_an_image_a_vm_uses_gone_is_missing_until_pushed_again(
        fleet: Cli, agent: Agent, images: Path, tmp_path: Path) -> None:
    disk, kernel = tmp_path / "base.raw", tmp_path / "vmlinuz"
    disk.write_bytes(os.urandom(MiB))
    kernel.write_bytes(os.urandom(MiB // 2))
    d_disk, d_kernel = sha(disk.read_bytes()), sha(kernel.read_bytes())
    fleet.ok("image", "add", "base", str(disk))
    fleet.ok("image", "add", "kern", str(kernel), "--kind", "kernel")
    # The VM's document names the images as sha256:DIGEST; create pushes them first.
    fleet.ok("vm", "create", "cat1", "--cpus", "1", "--memory", "64M", "--disk", "16M",
             "--image", "base")
    fleet.ok("vm", "create", "cat2", "--cpus", "1", "--memory", "64M", "--disk", "16M",
             "--image", "base", "--kernel", "kern")
    with contextlib.closing(sqlite3.connect(agent.ledger)) as db:
        doc = json.loads(db.execute("SELECT spec FROM vms WHERE name='cat2'").fetchone()[0])
    assert (doc["image"], doc["boot"]["kernel"]) == (f"sha256:{d_disk}", f"sha256:{d_kernel}")
    root = images / "by-digest"
    assert {p.name for p in root.iterdir() if not p.name.startswith(".")} == \
        {d_disk, d_kernel}
    time.sleep(2.5)
    assert image_alerts(fleet) == (0, [])

    (root / d_disk).unlink()
    (root / d_kernel).unlink()
    found = {a["object"]: a["detail"] for a in
             wait_for(fleet, [("IMAGE_MISSING", d_disk), ("IMAGE_MISSING", d_kernel)])}
    assert found == {d_disk: f"{root / d_disk} is gone; 2 VM(s) backed by it: cat1, cat2",
                     d_kernel: f"{root / d_kernel} is gone; 1 VM(s) backed by it: cat2"}
    assert image_alerts(fleet)[0] == 10

    # A symlink in its place is no image either (QEMU would read whatever it points at).
    (root / d_kernel).symlink_to(kernel)
    [alert] = [a for a in wait_for(fleet, [("IMAGE_MISSING", d_disk),
                                           ("IMAGE_MISSING", d_kernel)])
               if a["object"] == d_kernel]
    assert alert["detail"].startswith(f"{root / d_kernel} is not a regular file;")
    (root / d_kernel).unlink()

    fleet.ok("image", "push", "base", "h")
    fleet.ok("image", "push", "kern", "h")
    wait_for(fleet, [])
    c = Conn(agent.socket)
    try:
        assert {i["digest"] for i in c.ok("image.list")["images"]} == {d_disk, d_kernel}
    finally:
        c.close()


def _record(name: str, image: str, kernel: str = "", state: str = "present") -> VmRecord:
    spec = json.dumps({"image": image, "boot": {"kernel": kernel, "initrd": ""}
                       if kernel else None})
    return VmRecord(name=name, uuid=name, state=state, vcpus=1, memory_mib=64,
                    disk_path=f"/d/{name}.qcow2", disk_bytes=MiB, image=image,
                    power="running", created_at="", spec=spec)


def test_passes_read_a_file_again_when_its_stamp_moves_and_every_full_pass(
        tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images", tmp_path / "state")
    store.ensure_dirs()
    data = os.urandom(MiB)
    digest = sha(data)
    store.final(digest).write_bytes(data)
    watch = ImageWatch(store)
    assert watch.run() == 1                     # the first pass reads everything
    assert watch.run() == 0                     # unchanged stamp: not read again
    os.utime(store.final(digest), ns=(5, 5))    # touched: read again, still right
    assert watch.run() == 1 and watch.alerts([]) == []
    for _ in range(FULL_EVERY - 3):
        assert watch.run() == 0
    assert watch.run() == 1                     # every FULL_EVERY-th pass reads all
    store.final(digest).write_bytes(b"other")
    watch.run()
    assert watch.alerts([_record("a", f"sha256:{digest}", state="creating")]) == [
        ("IMAGE_CHANGED", digest, f"{store.final(digest)} hashes to {sha(b'other')} now "
                                  f"(mode 0644: writable); 1 VM(s) backed by it: a")]
    store.final(digest).unlink()
    assert watch.alerts([_record("a", f"sha256:{digest}", state="creating")]) == []
    assert watch.alerts([_record("a", f"sha256:{digest}")]) == [
        ("IMAGE_MISSING", digest, f"{store.final(digest)} is gone; 1 VM(s) backed by it: a")]
    assert watch.run() == 0 and watch.alerts([]) == []


def test_the_vms_on_each_image_by_reference_path_or_link(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images", tmp_path / "state")
    store.ensure_dirs()
    one, two = (os.urandom(1000) for _ in range(2))
    for data in (one, two):
        store.final(sha(data)).write_bytes(data)
    link = tmp_path / "images" / "debian.raw"
    link.symlink_to(store.final(sha(one)))
    records = [_record("by-ref", f"sha256:{sha(one)}"),
               _record("by-path", str(store.final(sha(one)))),
               _record("by-link", str(link), kernel=f"sha256:{sha(two)}"),
               _record("elsewhere", str(tmp_path / "images" / "plain.qcow2")),
               _record("blank", "")]
    assert store.users(records) == {sha(one): ["by-link", "by-path", "by-ref"],
                                    sha(two): ["by-link"]}
    assert store.held_by(records) == sorted([
        {"digest": sha(one), "size": 1000, "vms": ["by-link", "by-path", "by-ref"]},
        {"digest": sha(two), "size": 1000, "vms": ["by-link"]}], key=lambda i: i["digest"])
    assert store.digest_of("sha256:nothex") is None
