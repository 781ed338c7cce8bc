"""The images job end to end (issue 25): `ppec serve --once` with `[images] everywhere`
pushes a catalogue image made by qemu-img through real sshd to real agents, each with an
image directory of its own; a host that is down is an alert that resolves when it is back
and has the image; an image removed on a host by hand goes back."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from ppec.wire.methods import METHODS
from tests.realparts import TEST_NODE_URI, Agent, Cli, Sshd, make_key, unique
from tests.service.serving import CallCounter, Host, Service, add_hosts, stop_fleet

pytestmark = pytest.mark.skipif("image.upload" not in METHODS,
                                reason="the agent side of image pushes is not here yet")


@dataclass
class ImagesService(Service):
    """`Service` with an `[images]` table in its config."""

    images: dict[str, Any] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = super().env()
        path = Path(env["PPEC_CONFIG"])
        doc = tomllib.loads(path.read_text())
        path.write_text(tomli_w.dumps({**doc, "images": self.images}))
        return env


def fleet(root: Path, count: int, operator_pub: str) -> list[Host]:
    """Real agents behind real sshd, as serving.make_fleet, each with its own image_dir."""
    hosts = []
    for i in range(count):
        name = f"h{i + 1}"
        agent = Agent(root / name / "agent", host=unique(name), libvirt_uri=TEST_NODE_URI,
                      extra={"image_dir": str(root / name / "images")}).start()
        counter = CallCounter(root / name / "count.sock", agent.socket)
        sshd = Sshd(root / name / "sshd", address=f"127.0.0.{11 + i}",
                    agent_socket=counter.path, operator_pubkey=operator_pub).start()
        hosts.append(Host(name, agent, sshd, counter))
    return hosts


def held(root: Path, host: str, digest: str) -> Path:
    return root / host / "images" / "by-digest" / digest


def events(done: subprocess.CompletedProcess[str], name: str) -> list[dict[str, Any]]:
    return [r for r in map(json.loads, done.stderr.splitlines()) if r["event"] == name]


def image_alerts(db: Path) -> set[tuple[str, str, bool]]:
    with sqlite3.connect(db) as c:
        return {(h, code, r is None) for h, code, r in c.execute(
            "SELECT host, code, resolved_at FROM fleet_alerts WHERE source = 'images'")}


def test_serve_once_pushes_wanted_images_to_real_agents(cli: Cli, tmp_path: Path,
                                                        sshd_ready: None) -> None:
    key = tmp_path / "operator_ed25519"
    root = tmp_path / "fleet"
    hosts = fleet(root, 2, make_key(key))
    image = tmp_path / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", "-o", "preallocation=full",
                    str(image), "6M"], check=True, capture_output=True)
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    service = ImagesService(cli, tmp_path / "serve", {"workers": 4},
                            images={"everywhere": ["tiny"]})
    try:
        add_hosts(cli, hosts, key)
        cli.ok("image", "add", "tiny", str(image), "--os-user", "debian")
        hosts[1].down()
        done = service.once()
        assert done.returncode == 5, done.stderr
        assert held(root, "h1", digest).read_bytes() == image.read_bytes()
        assert not held(root, "h2", digest).exists()
        assert [(e["host"], e["state"], e["sent"]) for e in events(done, "image_pushed")] \
            == [("h1", "pushed", image.stat().st_size)]
        assert [e["host"] for e in events(done, "image_push_failed")] == ["h2"]
        assert image_alerts(cli.db) == {("h2", "IMAGE_PUSH_FAILED", True)}
        shown = json.loads(cli.ok("image", "show", "tiny", "-o", "json").stdout)
        assert shown["images"][0]["hosts"] == ["h1"]

        hosts[1].up()     # back: only h2 is pushed to, and its alert resolves
        done = service.once()
        assert done.returncode == 0, done.stderr
        assert [e["host"] for e in events(done, "image_pushed")] == ["h2"]
        assert hashlib.sha256(held(root, "h2", digest).read_bytes()).hexdigest() == digest
        assert image_alerts(cli.db) == {("h2", "IMAGE_PUSH_FAILED", False)}

        done = service.once()      # nothing missing: no push
        assert done.returncode == 0 and not events(done, "image_pushed")

        held(root, "h1", digest).unlink()   # removed by hand: its next snapshot says so
        pushed = []
        for _ in range(2):   # the first round may still plan from the older snapshot
            done = service.once()
            assert done.returncode == 0, done.stderr
            pushed += [e["host"] for e in events(done, "image_pushed")]
        assert pushed == ["h1"]
        assert held(root, "h1", digest).read_bytes() == image.read_bytes()
    finally:
        stop_fleet(hosts)
