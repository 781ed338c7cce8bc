"""The agent daemon over its real Unix socket: protocol limits, peers, keeps serving."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from ppec.wire import protocol
from tests.realparts import AGENT, QEMU_SCRATCH, Agent


def _conn(agent: Agent) -> tuple[socket.socket, object]:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(str(agent.socket))
    return s, s.makefile("rb")


def _ask(s: socket.socket, reader: object, raw: bytes) -> dict[str, object]:
    s.sendall(raw)
    return json.loads(reader.readline())  # type: ignore[attr-defined]


PING = b'{"v":1,"id":1,"method":"ping","params":{}}\n'


def test_socket_is_not_world_accessible(test_agent: Agent) -> None:
    mode = stat.S_IMODE(os.stat(test_agent.socket).st_mode)
    assert mode == 0o660
    assert os.stat(test_agent.socket).st_uid == 0 or os.getuid() != 0


def test_bad_lines_get_errors_and_the_connection_keeps_serving(test_agent: Agent) -> None:
    s, r = _conn(test_agent)
    cases = [
        (b"garbage\n", "BAD_JSON"),
        (b'{"v":1,"id":2,"method":"nope","params":{}}\n', "UNKNOWN_METHOD"),
        (b'{"v":1,"id":3,"method":"ping","params":{},"evil":1}\n', "BAD_REQUEST"),
        (b'{"v":2,"id":4,"method":"ping","params":{}}\n', "BAD_VERSION"),
        (b'{"v":1,"id":5,"method":"vm.get","params":{"name":"a","x":1}}\n', "BAD_PARAMS"),
        (b'{"v":1,"id":6,"method":"vm.get","params":[]}\n', "BAD_REQUEST"),
        (b'{"v":1,"id":7,"method":"vm.create","params":{"name":"a","vcpus":"1",'
         b'"memory_mib":64,"disk_bytes":1048576}}\n', "BAD_PARAMS"),
        (b"[" * 50_000 + b"\n", "BAD_JSON"),
        (b'{"v":1,"id":8,"method":"ping","params":{"pad":"' + b"x" * (2 * protocol.MAX_LINE)
         + b'"}}\n', "LINE_TOO_LONG"),
    ]
    for raw, code in cases:
        reply = _ask(s, r, raw)
        assert reply["ok"] is False, raw[:80]
        assert reply["error"]["code"] == code, (raw[:80], reply)  # type: ignore[index]
        assert "Traceback" not in json.dumps(reply)
        # ...and the same connection still answers a good request afterwards.
        assert _ask(s, r, PING)["ok"] is True
    s.close()
    assert test_agent.proc is not None and test_agent.proc.poll() is None


def test_many_requests_on_one_connection_keep_their_ids(test_agent: Agent) -> None:
    s, r = _conn(test_agent)
    s.sendall(b"".join(protocol.encode(protocol.request(i, "ping", {})) for i in range(50)))
    ids = [json.loads(r.readline())["id"] for _ in range(50)]  # type: ignore[attr-defined]
    assert ids == list(range(50))


def test_peer_with_another_uid_is_refused() -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to connect as another uid")
    # Somewhere the other uid can reach (pytest's tmp dirs are root-only).
    QEMU_SCRATCH.mkdir(mode=0o711, exist_ok=True)
    root = Path(tempfile.mkdtemp(dir=QEMU_SCRATCH))
    root.chmod(0o711)
    agent = Agent(root / "agent", host="t1").start()
    try:
        # Open the file permissions on purpose: SO_PEERCRED must still refuse the peer.
        agent.root.chmod(0o711)
        os.chmod(agent.socket, 0o666)
        _refused_as_nobody(agent)
    finally:
        agent.kill()
        shutil.rmtree(root, ignore_errors=True)


def _refused_as_nobody(test_agent: Agent) -> None:
    code = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]);"
            "s.sendall(b'{\"v\":1,\"id\":1,\"method\":\"ping\",\"params\":{}}\\n');"
            "print(s.makefile().readline())")
    # The system interpreter: the venv's may live under root's private home.
    done = subprocess.run(["/usr/bin/python3", "-c", code, str(test_agent.socket)], user=65534,
                          capture_output=True, text=True, timeout=30, check=False)
    reply = json.loads(done.stdout)
    assert reply["ok"] is False and reply["error"]["code"] == "FORBIDDEN"


def test_second_agent_on_the_same_socket_refuses_to_start(test_agent: Agent) -> None:
    twin = Agent(test_agent.root.parent / "twin", host="t1")
    twin.write_config()
    cfg = twin.config_path.read_text().replace(str(twin.socket), str(test_agent.socket))
    twin.config_path.write_text(cfg)
    done = subprocess.run([sys.executable, "-m", "ppec.agent.main", "serve", "--config",
                           str(twin.config_path)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 1
    assert "another agent is already serving" in done.stderr
    assert _ask(*_conn(test_agent), PING)["ok"] is True


def test_proxy_relays_and_reports_a_dead_agent(test_agent: Agent) -> None:
    done = subprocess.run([AGENT, "proxy", "--socket", str(test_agent.socket)], input=PING * 3,
                          capture_output=True, timeout=30, check=False)
    assert done.returncode == 0
    assert [json.loads(x)["ok"] for x in done.stdout.splitlines()] == [True] * 3
    dead = subprocess.run([AGENT, "proxy", "--socket", "/nonexistent/agent.sock"], input=PING,
                          capture_output=True, timeout=30, check=False)
    assert dead.returncode == 1
    reply = json.loads(dead.stdout)
    assert reply["error"]["code"] == "AGENT_UNREACHABLE"
    assert "agent not running" in reply["error"]["message"]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_proxy_help_exits_0_with_its_usage(flag: str) -> None:
    done = subprocess.run([AGENT, "proxy", flag], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ppec-agent proxy [--socket PATH]")
    assert "--socket PATH" in done.stdout and done.stderr == ""
    # An unknown argument is still bad input (exit 2), with the usage on stderr.
    bad = subprocess.run([AGENT, "proxy", "--nope"], capture_output=True, text=True,
                         timeout=30, check=False)
    assert bad.returncode == 2 and "usage: ppec-agent proxy" in bad.stderr


def test_proxy_imports_nothing_but_the_standard_library() -> None:
    code = ("import sys; sys.argv=['ppec-agent','proxy','--socket','/nonexistent'];"
            "from ppec.agent.main import main\n"
            "try: main()\nexcept SystemExit: pass\n"
            "bad=[m for m in sys.modules if m.split('.')[0] in "
            "('libvirt','paramiko','typer','rich','psutil','filelock')]\n"
            "sys.stderr.write(repr(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.stderr.strip().endswith("[]"), done.stderr


@pytest.mark.parametrize(("make", "words"), [
    (lambda p: sqlite3.connect(p).execute("PRAGMA user_version=99"),
     "has schema 99, newer than this ppec-agent"),
    (lambda p: p.write_bytes(b"not a database at all" * 100), "cannot be read"),
])
def test_a_ledger_the_agent_cannot_use_is_one_log_line_and_exit_1(
        tmp_path: Path, make: Callable[[Path], object], words: str) -> None:
    agent = Agent(tmp_path / "a", host="t9")
    agent.ledger.parent.mkdir(parents=True)
    make(agent.ledger)
    agent.write_config()
    done = subprocess.run([AGENT, "serve", "--config", str(agent.config_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr
    assert not agent.socket.exists()


def test_a_burst_of_500_connects_all_get_answers(test_agent: Agent) -> None:
    """A fleet-wide fan-out opens many sessions at once: every connect must be queued (a
    non-blocking connect to a full backlog fails with EAGAIN), and every one answered."""
    socks: list[socket.socket] = []
    try:
        for _ in range(500):
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            socks.append(s)
            s.connect(str(test_agent.socket))   # raises BlockingIOError on a full queue
        for i, s in enumerate(socks):
            s.setblocking(True)
            s.settimeout(60)
            s.sendall(b'{"v":1,"id":%d,"method":"ping","params":{}}\n' % i)
        replies = [json.loads(s.makefile("rb").readline()) for s in socks]
    finally:
        for s in socks:
            s.close()
    assert [r["id"] for r in replies] == list(range(500))
    assert all(r["ok"] and r["result"]["host"] == "t1" for r in replies)
