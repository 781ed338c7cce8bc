"""Base images by digest (issue 25), against a real agent over its socket: image.status,
image.upload (the connection becomes a byte stream, then one reply line), resume after a
broken transfer, refusals, image.list, image.remove, and a VM on real QEMU whose disk is
backed by a pushed image."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.realparts import Agent, Cli, domain_state, unique, wait_until

MiB = 1 << 20


class Conn:
    """JSON lines to the agent's socket, as any client speaks them."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(60)
        self.sock.connect(str(path))
        self.reader = self.sock.makefile("rb")
        self.next_id = 0

    def send(self, method: str, **params: Any) -> int:
        self.next_id += 1
        self.sock.sendall(json.dumps({"v": 1, "id": self.next_id, "method": method,
                                      "params": params}).encode() + b"\n")
        return self.next_id

    def line(self) -> dict[str, Any]:
        return dict(json.loads(self.reader.readline()))

    def ask(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = self.send(method, **params)
        reply = self.line()
        assert reply["id"] == msg_id, reply
        return reply

    def ok(self, method: str, **params: Any) -> dict[str, Any]:
        reply = self.ask(method, **params)
        assert reply["ok"] is True, reply
        return dict(reply["result"])

    def error(self, method: str, **params: Any) -> dict[str, Any]:
        reply = self.ask(method, **params)
        assert reply["ok"] is False, reply
        return dict(reply["error"])

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def agent(image_agent: Callable[..., Agent]) -> Agent:
    return image_agent()


@pytest.fixture
def conn(agent: Agent) -> Iterator[Conn]:
    c = Conn(agent.socket)
    yield c
    c.close()


def push(agent: Agent, data: bytes, digest: str = "", offset: int = 0,
         size: int = 0) -> tuple[int, dict[str, Any]]:
    """One upload on a connection of its own: (request id, the agent's last line)."""
    c = Conn(agent.socket)
    try:
        digest, size = digest or sha(data), size or len(data)
        msg_id = c.send("image.upload", digest=digest, size=size, offset=offset)
        first = c.line()
        assert first == {"v": 1, "id": msg_id, "ok": True, "result": {
            "stream": "image", "digest": digest, "offset": offset}}, first
        c.sock.sendall(data[offset:])
        last = c.line()
        assert c.reader.readline() == b""   # one upload per connection
        return msg_id, last
    finally:
        c.close()


def test_an_image_uploaded_in_one_go_is_in_place_read_only(agent: Agent, conn: Conn,
                                                          images: Path) -> None:
    data = os.urandom(5 * MiB + 17)
    digest = sha(data)
    final = images / "by-digest" / digest
    assert conn.ok("image.status", digest=digest) == {
        "digest": digest, "have": False, "path": str(final), "partial": 0, "size": None}
    msg_id, last = push(agent, data)
    assert last == {"v": 1, "id": msg_id, "ok": True,
                    "result": {"digest": digest, "path": str(final), "size": len(data)}}
    st = final.stat()
    assert stat.S_IMODE(st.st_mode) == 0o444 and st.st_uid == os.geteuid()
    assert stat.S_IMODE((images / "by-digest").stat().st_mode) == 0o755
    assert sha(final.read_bytes()) == digest
    assert list((images / "by-digest" / ".partial").iterdir()) == []
    assert conn.ok("image.status", digest=digest) == {
        "digest": digest, "have": True, "path": str(final), "partial": 0, "size": len(data)}
    # Pushing it again is a no-op: no stream, the connection stays in JSON lines.
    assert conn.ok("image.upload", digest=digest, size=len(data), offset=0) == {
        "digest": digest, "have": True, "path": str(final), "size": len(data)}
    assert conn.ok("image.list") == {"images": [{"digest": digest, "size": len(data),
                                                 "path": str(final), "vms": []}],
                                     "partial": []}
    assert conn.ok("host.info")["images"] == [{"digest": digest, "size": len(data),
                                               "vms": []}]


def test_a_broken_transfer_resumes_from_what_the_host_kept(agent: Agent, conn: Conn,
                                                           images: Path) -> None:
    data = os.urandom(6 * MiB + 5)
    digest, sent = sha(data), 2 * MiB + 123
    c = Conn(agent.socket)
    c.send("image.upload", digest=digest, size=len(data), offset=0)
    assert c.line()["result"]["stream"] == "image"
    c.sock.sendall(data[:sent])
    c.close()   # gone mid-stream: no answer can come; the agent keeps what arrived

    wait_until(lambda: conn.ok("image.status", digest=digest)["partial"] == sent,
               timeout=30, what="the partial holds every byte sent")
    partial = images / "by-digest" / ".partial" / digest
    assert stat.S_IMODE(partial.stat().st_mode) == 0o600
    assert partial.read_bytes() == data[:sent]
    assert conn.ok("image.list")["partial"] == [{"digest": digest, "bytes": sent}]
    assert not conn.ok("image.status", digest=digest)["have"]

    # The partial is complete a moment before the broken upload lets go of its lock
    # (it fsyncs in between): until then a new upload is UPLOAD_BUSY.
    wait_until(lambda: not upload_busy(conn, digest, len(data)), timeout=30,
               what="the broken upload let go of its lock")
    err = conn.error("image.upload", digest=digest, size=len(data), offset=sent - 1)
    assert err["code"] == "OFFSET_MISMATCH"
    assert err["details"] == {"partial": sent, "kind": "CONFLICT"}
    assert partial.stat().st_size == sent   # a refused upload writes nothing

    _, last = push(agent, data, offset=sent)
    assert last["ok"] is True and last["result"]["size"] == len(data), last
    assert sha((images / "by-digest" / digest).read_bytes()) == digest
    assert not partial.exists()


def test_a_resume_hashes_the_bytes_the_host_kept(agent: Agent, images: Path) -> None:
    """The agent hashes an upload as it writes; a resume must still hash the partial it
    had, not trust it: a byte changed in it before the resume is BAD_IMAGE."""
    data = os.urandom(3 * MiB + 9)
    digest, sent = sha(data), MiB + 7
    partial = images / "by-digest" / ".partial" / digest
    c = Conn(agent.socket)
    c.send("image.upload", digest=digest, size=len(data), offset=0)
    assert c.line()["result"]["stream"] == "image"
    c.sock.sendall(data[:sent])
    c.close()
    conn = Conn(agent.socket)
    try:
        wait_until(lambda: conn.ok("image.status", digest=digest)["partial"] == sent,
                   timeout=30, what="the partial holds every byte sent")
        wait_until(lambda: not upload_busy(conn, digest, len(data)), timeout=30,
                   what="the broken upload let go of its lock")
    finally:
        conn.close()
    kept = bytearray(partial.read_bytes())
    kept[100] ^= 0x01
    partial.write_bytes(bytes(kept))

    _, last = push(agent, data, offset=sent)
    assert last["ok"] is False and last["error"]["code"] == "BAD_IMAGE", last
    assert last["error"]["details"]["got"] == sha(bytes(kept) + data[sent:])
    assert not partial.exists() and not (images / "by-digest" / digest).exists()


def upload_busy(conn: Conn, digest: str, size: int) -> bool:
    """Whether another upload of ``digest`` holds its lock (a harmless probe: the offset
    is past the end, refused once the lock is had)."""
    return bool(conn.error("image.upload", digest=digest, size=size,
                           offset=size + 1)["code"] == "UPLOAD_BUSY")


def test_corrupted_bytes_are_refused_and_nothing_is_left(agent: Agent, images: Path) -> None:
    data = os.urandom(3 * MiB)
    digest = sha(data)
    bad = bytearray(data)
    bad[MiB] ^= 0xFF
    msg_id, last = push(agent, bytes(bad), digest=digest)
    assert last["id"] == msg_id and last["ok"] is False, last
    err = last["error"]
    assert err["code"] == "BAD_IMAGE" and err["details"]["kind"] == "STORAGE"
    assert digest in err["message"] and sha(bytes(bad)) in err["message"]
    assert err["details"]["got"] == sha(bytes(bad))
    assert list((images / "by-digest").iterdir()) == [images / "by-digest" / ".partial"]
    assert list((images / "by-digest" / ".partial").iterdir()) == []


def test_one_upload_of_a_digest_at_a_time(agent: Agent, conn: Conn) -> None:
    data = os.urandom(MiB)
    digest = sha(data)
    first = Conn(agent.socket)
    try:
        first.send("image.upload", digest=digest, size=len(data), offset=0)
        assert first.line()["result"]["stream"] == "image"
        first.sock.sendall(data[:1000])
        assert conn.error("image.upload", digest=digest, size=len(data),
                          offset=0)["code"] == "UPLOAD_BUSY"
        assert conn.error("image.remove", digest=digest)["code"] == "UPLOAD_BUSY"
        # Other digests and everything else go on meanwhile.
        other = os.urandom(1000)
        assert push(agent, other)[1]["ok"] is True
        assert conn.ok("ping")["host"] == "t1"
    finally:
        first.close()
    wait_until(lambda: conn.ok("image.status", digest=digest)["partial"] == 1000,
               timeout=30, what="the first upload's bytes are kept")


@pytest.mark.parametrize(("method", "params", "words"), [
    ("image.status", {"digest": "A" * 64}, "64 lower-case hex"),
    ("image.status", {"digest": "a" * 63}, "64 lower-case hex"),
    ("image.status", {"digest": "../" + "a" * 61}, "64 lower-case hex"),
    ("image.upload", {"digest": "a" * 64, "size": 0}, "size must be at least 1"),
    ("image.upload", {"digest": "a" * 64, "size": 10, "offset": -1}, "at least 0"),
    ("image.upload", {"digest": "a" * 64, "size": 10, "offset": 11}, "past its size"),
    ("image.upload", {"digest": "a" * 64, "size": 1 << 51}, "at most"),
    ("image.remove", {"digest": "a" * 64, "force": True}, "unknown parameter"),
])
def test_bad_parameters(conn: Conn, method: str, params: dict[str, Any], words: str) -> None:
    err = conn.error(method, **params)
    assert err["code"] == "BAD_PARAMS" and words in err["message"], err


def test_remove(conn: Conn, agent: Agent, images: Path) -> None:
    data = os.urandom(4096)
    digest = sha(data)
    assert conn.error("image.remove", digest=digest)["code"] == "NOT_FOUND"
    push(agent, data)
    assert conn.ok("image.remove", digest=digest) == {"digest": digest, "removed": True}
    assert not (images / "by-digest" / digest).exists()
    assert conn.ok("image.list") == {"images": [], "partial": []}
    # A partial alone is removed too.
    c = Conn(agent.socket)
    c.send("image.upload", digest=digest, size=len(data), offset=0)
    c.line()
    c.sock.sendall(data[:100])
    c.close()
    wait_until(lambda: conn.ok("image.list")["partial"] == [{"digest": digest, "bytes": 100}]
               and not upload_busy(conn, digest, len(data)), timeout=30, what="partial kept")
    assert conn.ok("image.remove", digest=digest)["removed"] is True
    assert conn.ok("image.status", digest=digest)["partial"] == 0


@pytest.fixture
def tiny_images(tmp_path: Path) -> Iterator[Path]:
    """An image dir that is a 32 MiB tmpfs of its own."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tmp_path / "tiny"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0755", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_an_image_that_does_not_fit_is_refused_before_a_byte_is_written(
        tmp_path: Path, tiny_images: Path) -> None:
    agent = Agent(tmp_path / "agent", host="t1",
                  extra={"image_dir": str(tiny_images)}).start()
    try:
        c = Conn(agent.socket)
        err = c.error("image.upload", digest="b" * 64, size=64 * MiB, offset=0)
        assert err["code"] == "NO_SPACE" and err["details"]["kind"] == "NO_CAPACITY", err
        assert err["details"]["needed_bytes"] == 64 * MiB
        assert 0 < err["details"]["free_bytes"] <= 32 * MiB
        assert "not enough space" in err["message"]
        assert list((tiny_images / "by-digest" / ".partial").iterdir()) == []
        assert c.ok("image.status", digest="b" * 64)["partial"] == 0
        c.close()
        data = os.urandom(4 * MiB)   # one that fits does
        assert push(agent, data)[1]["ok"] is True
        assert sha((tiny_images / "by-digest" / sha(data)).read_bytes()) == sha(data)
    finally:
        agent.kill()


def test_an_image_in_use_by_a_vm_on_real_qemu_is_not_removed(cli: Cli,
                                                            qemu_dir: Path) -> None:
    images = qemu_dir / "images"
    agent = Agent(qemu_dir / "agent", host=unique("q"), libvirt_uri="qemu:///system",
                  extra={"cpu_overcommit": 12.0, "image_dir": str(images)}).start()
    try:
        base = qemu_dir / "base.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"],
                       check=True)
        data = base.read_bytes()
        digest = sha(data)
        assert push(agent, data)[1]["ok"] is True
        final = images / "by-digest" / digest
        cli.ok("host", "add", "q", "--address", "local", "--socket", str(agent.socket))
        name = unique("img")
        cli.ok("vm", "create", name, "--cpus", "1", "--memory", "64M", "--disk", "32M",
               "--image", str(final))
        assert domain_state(name) == "running"
        c = Conn(agent.socket)
        assert c.ok("image.list")["images"][0]["vms"] == [name]
        err = c.error("image.remove", digest=digest)
        assert err["code"] == "IMAGE_IN_USE" and err["details"]["vms"] == [name], err
        assert name in err["message"]
        # Stopped, its XML names only its overlay: still in use (the ledger says so).
        cli.ok("vm", "stop", name, "--force")
        assert c.error("image.remove", digest=digest)["code"] == "IMAGE_IN_USE"
        assert final.exists()
        cli.ok("vm", "delete", name)
        assert c.ok("image.list")["images"][0]["vms"] == []
        assert c.ok("image.remove", digest=digest) == {"digest": digest, "removed": True}
        assert not final.exists()
        c.close()
    finally:
        agent.kill()
