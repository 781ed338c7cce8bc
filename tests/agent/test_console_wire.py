"""vm.console and vm.logs on the wire, against a real agent on libvirt's test driver (which
has no consoles): every refusal is an ordinary error reply and the connection stays in
JSON lines; only a success switches it to a byte stream."""

from __future__ import annotations

import json
import socket

import pytest

from tests.realparts import Agent, Cli


def ask(s: socket.socket, reader: object, method: str, **params: object) -> dict[str, object]:
    s.sendall(json.dumps({"v": 1, "id": 1, "method": method, "params": params}).encode()
              + b"\n")
    return dict(json.loads(reader.readline()))  # type: ignore[attr-defined]


@pytest.fixture
def conn(cli: Cli, test_agent: Agent) -> tuple[socket.socket, object]:
    cli.ok("host", "add", "t1", "--address", "local", "--socket", str(test_agent.socket))
    cli.ok("vm", "create", "web-1", "--cpus", "1", "--memory", "64M", "--disk", "16M")
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(str(test_agent.socket))
    return s, s.makefile("rb")


def error(reply: dict[str, object]) -> dict[str, object]:
    assert reply["ok"] is False, reply
    return dict(reply["error"])  # type: ignore[arg-type]


@pytest.mark.parametrize(("params", "code"), [
    ({"name": "no-such"}, "NOT_FOUND"),
    ({"name": "web-1", "client": "\x1b[31mred"}, "BAD_PARAMS"),
    ({"name": "web-1", "client": "x" * 101}, "BAD_PARAMS"),
    ({"name": "web-1", "force": 1}, "BAD_PARAMS"),
    ({"name": "web-1", "tty": True}, "BAD_PARAMS"),
    # The test driver cannot open a console: libvirt's refusal, as an error reply.
    ({"name": "web-1"}, "LIBVIRT"),
])
def test_console_refusals_keep_the_connection_in_json_lines(
        conn: tuple[socket.socket, object], params: dict[str, object], code: str) -> None:
    s, r = conn
    assert error(ask(s, r, "vm.console", **params))["code"] == code
    assert ask(s, r, "ping")["ok"] is True


def test_a_stopped_vm_has_no_console_and_says_so(cli: Cli,
                                                 conn: tuple[socket.socket, object]) -> None:
    s, r = conn
    cli.ok("vm", "stop", "web-1", "--force")
    err = error(ask(s, r, "vm.console", name="web-1"))
    assert err["code"] == "NOT_RUNNING" and err["details"] == {"state": "shut-off",
                                                               "kind": "CONFLICT"}
    assert "web-1 is shut-off" in str(err["message"])
    done = cli.run("vm", "console", "web-1")
    assert done.returncode == 1 and "it has a console only while it runs" in done.stderr


def test_logs_of_a_vm_that_printed_nothing_and_bad_cursors(
        conn: tuple[socket.socket, object], test_agent: Agent) -> None:
    s, r = conn
    got = ask(s, r, "vm.logs", name="web-1")
    assert got["ok"] is True
    result = dict(got["result"])  # type: ignore[arg-type]
    assert result["text"] == "" and result["host"] == "t1" and not result["more"]
    # A log that appears later is read from its start by the cursor taken before.
    log = test_agent.console("web-1").path
    log.write_bytes(b"hello\r\n")
    later = dict(ask(s, r, "vm.logs", name="web-1", cursor=result["cursor"])["result"])  # type: ignore[arg-type]
    assert later["text"] == "hello\r\n" and later["reset"] is False
    assert error(ask(s, r, "vm.logs", name="web-1", cursor="nonsense"))["code"] == "BAD_PARAMS"
    assert error(ask(s, r, "vm.logs", name="web-1", lines=-1))["code"] == "BAD_PARAMS"
    assert error(ask(s, r, "vm.logs", name="nope"))["code"] == "NOT_FOUND"
    assert ask(s, r, "ping")["ok"] is True
