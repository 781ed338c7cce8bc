"""Pushing images through a real agent, with the transport seam cutting or corrupting the
stream (issue 25): a push resumes from the host's offset after a dropped connection, a
changed byte is refused (BAD_IMAGE) and nothing kept, a full disk is refused before any
byte is written. The agent is real (libvirt's test driver); the seam is the stream."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ppec.core.errors import PpecError, TransportError
from ppec.operator import config as ppec_config
from ppec.operator import imagepush, images
from ppec.operator.context import Context
from ppec.operator.fleet.client import AgentClient, Reach
from ppec.operator.fleet.transport import LocalStream, Stream
from ppec.operator.store import Host, Store
from tests.realparts import Agent

SIZE = 24 << 20
ANSWER = -1          # cut after every byte has left, losing the host's answer


class Seam:
    """The agent's socket, with a fault at a byte count of this connection's sends."""

    def __init__(self, inner: Stream, cut_at: int | None, flip_at: int | None) -> None:
        self.inner, self.cut_at, self.flip_at = inner, cut_at, flip_at
        self.sent = 0

    def send(self, data: bytes, timeout: float) -> None:
        start, end = self.sent, self.sent + len(data)
        if self.flip_at is not None and start <= self.flip_at < end:
            i = self.flip_at - start
            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
        if self.cut_at not in (None, ANSWER) and end > self.cut_at:
            self.inner.send(data[:self.cut_at - start], timeout)
            self.sent = self.cut_at
            self.inner.close()
            raise TransportError("the seam cut the connection", code="AGENT_UNREACHABLE")
        self.inner.send(data, timeout)
        self.sent = end

    def recv(self, timeout: float) -> bytes:
        if self.cut_at == ANSWER and self.sent >= SIZE:
            # Every byte has left; the host's answer is lost on the way back.
            self.inner.close()
            raise TransportError("the seam cut the connection", code="AGENT_UNREACHABLE")
        return self.inner.recv(timeout)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def agent(image_agent: Callable[..., Agent]) -> Agent:
    return image_agent()


@pytest.fixture
def image(tmp_path: Path) -> tuple[Store, images.Image]:
    store = Store(tmp_path / "ppec.db")
    store.add_host(Host(name="i1", address="local", socket=str(tmp_path / "agent" /
                                                               "agent.sock")))
    path = tmp_path / "big.raw"
    path.write_bytes(os.urandom(SIZE))
    return store, images.add(store, "big", path, kind="disk")


def _ctx(store: Store, tmp: Path, seams: list[Seam], cut_at: int | None = None,
         flip_at: int | None = None) -> Context:
    def connect(host: Host, reach: Reach) -> AgentClient:
        def opener() -> Stream:
            seam = Seam(LocalStream(host.socket, 10), cut_at, flip_at)
            seams.append(seam)
            return seam
        return AgentClient(host, reach, opener=opener)
    return Context(store, ppec_config.load(tmp / "none.toml"), Reach(known_hosts=tmp / "kh"),
                   connect=connect)


def _push(store: Store, tmp: Path, image: images.Image, **fault: int) -> tuple[
        dict[str, object] | PpecError, int]:
    seams: list[Seam] = []
    try:
        result: dict[str, object] | PpecError = imagepush.push(
            _ctx(store, tmp, seams, **fault), store.host("i1"), image)
    except PpecError as e:
        result = e
    return result, sum(s.sent for s in seams)


def _files(agent: Agent, tmp: Path) -> tuple[list[str], list[str]]:
    root = tmp / "images" / "by-digest"
    listing: Callable[[Path], list[str]] = lambda d: sorted(  # noqa: E731
        p.name for p in d.iterdir() if p.is_file()) if d.is_dir() else []
    return listing(root), listing(root / ".partial")


@pytest.mark.parametrize("cuts", [(1 << 20,), (5 << 20, 17 << 20), (ANSWER,)],
                         ids=["early", "twice-mid-stream", "answer-lost"])
def test_a_cut_push_resumes_from_the_hosts_offset(
        agent: Agent, image: tuple[Store, images.Image], tmp_path: Path,
        cuts: tuple[int, ...]) -> None:
    store, img = image
    delivered = 0
    for cut in cuts:
        result, sent = _push(store, tmp_path, img, cut_at=cut)
        assert isinstance(result, TransportError), result
        delivered = sent
        # No partial is ever taken as the image.
        final, _ = _files(agent, tmp_path)
        assert final in ([], [img.digest])
    result, _ = _push(store, tmp_path, img)
    assert isinstance(result, dict), result
    final, partial = _files(agent, tmp_path)
    assert (final, partial) == ([img.digest], [])
    held = tmp_path / "images" / "by-digest" / img.digest
    assert hashlib.sha256(held.read_bytes()).hexdigest() == img.digest
    if cuts[-1] == ANSWER:   # every byte had left: the host finished; a no-op re-run
        assert (result["state"], result["sent"]) == ("present", 0)
    else:                    # resumed: only what the host did not have was sent again
        assert result["state"] == "pushed"
        assert 0 < int(str(result["sent"])) <= SIZE - (delivered - 8192)
        assert int(str(result["sent"])) < SIZE


def test_a_changed_byte_is_refused_and_nothing_kept(
        agent: Agent, image: tuple[Store, images.Image], tmp_path: Path) -> None:
    store, img = image
    result, _ = _push(store, tmp_path, img, flip_at=3 << 20)
    assert isinstance(result, PpecError) and result.code == "BAD_IMAGE", result
    assert img.digest in result.message
    assert _files(agent, tmp_path) == ([], [])
    result, _ = _push(store, tmp_path, img)      # a clean push afterwards
    assert isinstance(result, dict) and result["state"] == "pushed"


def test_a_full_disk_is_refused_before_a_byte_is_written(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)], check=True)
    made = Agent(tmp_path / "agent", host="i1", extra={"image_dir": str(small)}).start()
    try:
        store = Store(tmp_path / "ppec.db")
        store.add_host(Host(name="i1", address="local", socket=str(made.socket)))
        path = tmp_path / "big.raw"
        path.write_bytes(os.urandom(SIZE))
        img = images.add(store, "big", path)
        result, sent = _push(store, tmp_path, img)
        assert isinstance(result, PpecError) and result.code == "NO_SPACE", result
        assert result.exit_code == 3
        assert sent < 4096                        # two request lines, no image byte
        assert not any((small / "by-digest" / ".partial").glob("*"))
    finally:
        made.kill()
        subprocess.run(["umount", str(small)], check=False)
