"""Edges of ``ppec vm create``: images, full disks, racing duplicate names, agent stop."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ppec.wire import protocol
from tests.realparts import Agent, Cli, vm_files


@pytest.fixture
def images(tmp_path: Path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    return d


@pytest.fixture
def test_agent(image_agent: Callable[..., Agent]) -> Agent:
    """This file's agent keeps base images in a dir of the test's own."""
    return image_agent()


@pytest.fixture
def fleet(cli: Cli, test_agent: Agent) -> Cli:
    cli.ok("host", "add", "t1", "--address", "local", "--socket", str(test_agent.socket))
    return cli


def test_image_becomes_the_backing_file(fleet: Cli, test_agent: Agent, images: Path) -> None:
    base = images / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    fleet.ok("vm", "create", "img1", "--cpus", "1", "--memory", "64M", "--disk", "128M",
             "--image", str(base))
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(test_agent.storage / "img1.qcow2")],
        capture_output=True, text=True, check=True).stdout)
    assert info["backing-filename"] == str(base)
    assert info["virtual-size"] == 128 << 20


@pytest.mark.parametrize(("image", "disk", "words"), [
    ("IMAGES/nope.qcow2", "128M", "nope.qcow2 does not exist on this host"),
    ("relative.qcow2", "128M", "unknown image 'relative.qcow2': not in the catalogue (`ppec "
                               "image list`), and a path on the host must be absolute"),
    ("/etc/passwd", "128M", "image /etc/passwd is not under the image dir"),
    ("IMAGES/../agent/state/ledger.db", "128M", "is not under the image dir"),
    ("BASE", "32M", "disk size 32M is smaller than image"),
])
def test_bad_images_leave_nothing(fleet: Cli, test_agent: Agent, images: Path, image: str,
                                  disk: str, words: str) -> None:
    base = images / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    image = str(base) if image == "BASE" else image.replace("IMAGES", str(images))
    done = fleet.run("vm", "create", "img2", "--cpus", "1", "--memory", "64M", "--disk", disk,
                     "--image", image)
    assert done.returncode == 2, done.stderr
    assert words in done.stderr
    assert fleet.store_vms() == [] and test_agent.ledger_rows() == {}
    assert test_agent.volumes() == set()


def test_disk_larger_than_free_space(fleet: Cli, test_agent: Agent) -> None:
    done = fleet.run("vm", "create", "big", "--cpus", "1", "--memory", "64M", "--disk", "1000T")
    assert done.returncode == 3
    assert "storage free, needs 1048576000 MiB" in done.stderr
    # The agent's own check, for a client that skips placement.
    reply = _ask(test_agent, protocol.request(1, "vm.create", {
        "name": "big", "vcpus": 1, "memory_mib": 64, "disk_bytes": 1000 << 40}))
    assert reply["error"]["code"] == "NO_SPACE"
    assert "not enough space in" in reply["error"]["message"]
    assert test_agent.volumes() == set() and test_agent.ledger_rows() == {}


def _ask(agent: Agent, msg: dict[str, object]) -> dict[str, object]:
    import socket
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(agent.socket))
        s.sendall(protocol.encode(msg))
        return json.loads(s.makefile("rb").readline())


def test_racing_creates_of_the_same_names(fleet: Cli, test_agent: Agent) -> None:
    """Twenty processes, ten names, two each: every name is built exactly once."""
    names = [f"r{i}" for i in range(10)] * 2

    def create(n: str) -> tuple[str, int, str]:
        done = fleet.run("vm", "create", n, "--flavor", "tiny", "-o", "json")
        return n, done.returncode, done.stderr

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(create, names))
    winners = sorted(n for n, code, _ in results if code == 0)
    losers = [(n, code, err) for n, code, err in results if code != 0]
    assert winners == sorted(set(names))
    assert all(code == 2 and "already exists" in err for _, code, err in losers), losers
    rows = test_agent.ledger_rows()
    assert sorted(rows) == winners
    assert len({path for _, path in rows.values()}) == 10
    assert test_agent.volumes() == vm_files(*winners)
    assert fleet.store_vms() == winners


def test_sigterm_stops_the_agent_cleanly(test_agent: Agent) -> None:
    assert test_agent.proc is not None
    test_agent.proc.send_signal(signal.SIGTERM)
    assert test_agent.proc.wait(timeout=30) == 0
    assert not test_agent.socket.exists()
    assert test_agent.root.joinpath("state", "host.lock").exists()  # the lock file stays
