"""`vm create --image NAME` on a fleet where one host holds the image (issue 25): placed
there when it fits, elsewhere with the image pushed first when it does not, rejected with
the reason when [images] push_on_create is off. Real agents (libvirt's test driver), each
with its own image dir; the pushes go over their sockets."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realparts import Agent, Cli


@pytest.fixture
def two(cli: Cli, tmp_path: Path) -> Iterator[tuple[Cli, Agent, Agent]]:
    # h1 keeps all but 4 GiB for its host: an 8 GiB VM does not fit there.
    small = Agent(tmp_path / "a1", host="h1", extra={
        "image_dir": str(tmp_path / "img1"), "reserved_memory": "60G"}).start()
    big = Agent(tmp_path / "a2", host="h2", extra={"image_dir": str(tmp_path / "img2")}).start()
    for a in (small, big):
        cli.ok("host", "add", a.host, "--address", "local", "--socket", str(a.socket))
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "32M"], check=True)
    cli.ok("image", "add", "deb", str(base))
    cli.ok("image", "push", "deb", "h1")
    yield cli, small, big
    small.kill()
    big.kill()


def _digest(cli: Cli) -> str:
    return str(json.loads(cli.ok("image", "show", "deb", "-o", "json").stdout)["images"][0][
        "digest"])


def test_placed_where_the_image_is_when_it_fits(two: tuple[Cli, Agent, Agent],
                                               tmp_path: Path) -> None:
    cli, _, _ = two
    # Without an image asked for, holding one weighs nothing.
    explain = json.loads(cli.ok("place", "--cpus", "1", "--memory", "256M", "--disk", "64M",
                                "--explain", "--refresh", "-o", "json").stdout)
    assert [("image" in h["weights"], h["filters"]["image"]) for h in explain["hosts"]] == [
        (False, None), (False, None)]
    vm = json.loads(cli.ok("vm", "create", "v1", "--cpus", "1", "--memory", "256M",
                           "--disk", "64M", "--image", "deb", "-o", "json").stdout)
    assert vm["host"] == "h1"
    assert not (tmp_path / "img2" / "by-digest" / _digest(cli)).exists()   # no push
    doc = json.loads(cli.ok("image", "list", "-o", "json").stdout)["images"][0]
    assert (doc["hosts"], doc["vms"]) == (["h1"], ["v1"])
    done = cli.run("image", "remove", "deb")
    assert (done.returncode, done.stderr.strip()) == (
        1, f"ppec: error: image deb ({_digest(cli)[:12]}) is used by v1; delete or rebuild "
           f"them first")
    assert json.loads(cli.ok("vm", "show", "v1", "-o", "json").stdout)["image"] == \
        f"sha256:{_digest(cli)}"
    # The store's record names it as the document does, not by the name typed.
    listed = json.loads(cli.ok("vm", "list", "--limit", "10", "-o", "json").stdout)["vms"]
    assert [(v["name"], v["image"]) for v in listed] == [("v1", f"sha256:{_digest(cli)}")]
    cli.ok("vm", "delete", "v1")
    cli.ok("image", "remove", "deb")


def test_placed_elsewhere_with_the_image_pushed_first(two: tuple[Cli, Agent, Agent],
                                                     tmp_path: Path) -> None:
    cli, _, big = two
    vm = json.loads(cli.ok("vm", "create", "v2", "--cpus", "1", "--memory", "8G",
                           "--disk", "64M", "--image", "deb", "-o", "json").stdout)
    assert vm["host"] == "h2"
    held = tmp_path / "img2" / "by-digest" / _digest(cli)
    assert held.is_file() and oct(held.stat().st_mode & 0o777) == "0o444"
    assert json.loads(cli.ok("image", "list", "-o", "json").stdout)["images"][0][
        "hosts"] == ["h1", "h2"]
    backing = subprocess.run(["qemu-img", "info", "--output=json",
                              str(big.storage / "v2.qcow2")], capture_output=True, text=True,
                             check=True).stdout
    assert json.loads(backing)["backing-filename"] == str(held)


def test_rejected_with_the_reason_when_pushes_are_off(two: tuple[Cli, Agent, Agent],
                                                     tmp_path: Path) -> None:
    cli, _, _ = two
    cli.configure("[images]\npush_on_create = false\n")
    done = cli.run("vm", "create", "v3", "--cpus", "1", "--memory", "8G", "--disk", "64M",
                   "--image", "deb")
    assert done.returncode == 3
    digest = _digest(cli)
    assert done.stderr.strip() == (
        f"ppec: error: no host can take v3: h1: 4096 MiB memory free, needs 8192 MiB; "
        f"h2: lacks image {digest[:12]} ([images] push_on_create is off)")
    assert cli.store_vms() == []
    small = cli.run("vm", "create", "v4", "--cpus", "1", "--memory", "256M", "--disk", "16M",
                    "--image", "deb")
    assert small.returncode == 2
    assert small.stderr.strip() == "ppec: error: --disk 16M is smaller than image deb (32M)"


def test_place_explain_shows_the_image_weight_and_remove_from_a_host(
        two: tuple[Cli, Agent, Agent], tmp_path: Path) -> None:
    cli, _, _ = two
    doc = json.loads(cli.ok("place", "--cpus", "1", "--memory", "256M", "--image", "deb",
                            "--explain", "--refresh", "-o", "json").stdout)
    weights = {h["host"]: h["weights"].get("image") for h in doc["hosts"]}
    assert weights == {"h1": 1.0, "h2": 0.0} and doc["host"] == "h1"
    assert {h["host"]: h["filters"]["image"] for h in doc["hosts"]} == {"h1": None,
                                                                       "h2": None}
    shown = cli.ok("host", "show", "h1").stdout
    assert _digest(cli)[:12] in shown
    cli.ok("vm", "create", "v5", "--cpus", "1", "--memory", "256M", "--disk", "64M",
           "--image", "deb", "--host", "h1")
    busy = cli.run("image", "remove", "deb", "--host", "h1")
    assert busy.returncode == 1 and "v5" in busy.stderr
    cli.ok("vm", "delete", "v5")
    cli.ok("image", "remove", "deb", "--host", "h1")
    assert not (tmp_path / "img1" / "by-digest" / _digest(cli)).exists()
    assert json.loads(cli.ok("image", "list", "-o", "json").stdout)["images"][0][
        "hosts"] == []
