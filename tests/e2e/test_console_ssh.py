"""`ppec vm console` and `ppec vm logs` on a real booting guest, through real sshd and the
forced command `ppec-agent proxy`, driven on a real pty. What ppec says is checked against
libvirt itself (is the console held?) and the guest's own output."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.fleet import SimHost, make_fleet
from tests.e2e.terminal import PtyRun, guest_boot_args, libvirt_console_held
from tests.policy import install_policy, make_people
from tests.realparts import PPEC, QEMU_URI, Cli, domain_state, make_key, unique, wait_until


@dataclass
class Booted:
    cli: Cli
    host: SimHost
    vm: str


@contextmanager
def boot_host(cli: Cli, root: Path, guest: Path, **extra: object) -> Iterator[Booted]:
    """One host over SSH whose agent boots the test guest; one VM created on it."""
    key = root / "operator_ed25519"
    (host,) = make_fleet(root / "fleet", 1, QEMU_URI, make_key(key),
                         extra={"image_dir": str(guest), "domain_type": "qemu",
                                "cpu_overcommit": 12.0, **extra})
    try:
        cli.ok(*host.add_args(key), "--accept-new-host-key")
        vm = unique("con")
        cli.ok("vm", "create", vm, *guest_boot_args(guest))
        yield Booted(cli, host, vm)
    finally:
        host.sshd.stop()
        host.agent.kill()


@pytest.fixture
def booted(cli: Cli, qemu_dir: Path, guest: Path, sshd_ready: None) -> Iterator[Booted]:
    with boot_host(cli, qemu_dir, guest) as b:
        yield b


def guest_up(b: Booted) -> None:
    wait_until(lambda: "PPEC-GUEST-UP" in b.host.agent.console(b.vm).text(), 120,
               "the guest booted")


def console(b: Booted, *args: str) -> PtyRun:
    return PtyRun(["vm", "console", b.vm, *args], b.cli.env)


def error(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    return dict(json.loads(done.stderr.strip().splitlines()[-1])["error"])


def test_logs_follow_shows_the_boot_then_console_types_into_busybox(booted: Booted) -> None:
    b = booted
    # vm logs --follow: the boot lines as the guest prints them, until Ctrl-C (exit 0).
    follow = subprocess.Popen([PPEC, "vm", "logs", b.vm, "--follow"], env=b.cli.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = ""
        assert follow.stdout is not None
        while "PPEC-GUEST-UP" not in seen:
            line = follow.stdout.readline().decode()
            assert line, f"vm logs --follow ended early: {follow.stderr.read()!r}"  # type: ignore[union-attr]
            seen += line
    finally:
        follow.send_signal(signal.SIGINT)
        assert follow.wait(timeout=30) == 0
    # The same lines as virtlogd wrote them, without following.
    assert "PPEC-GUEST-UP" in b.host.agent.console(b.vm).text()
    assert "PPEC-GUEST-UP" in b.cli.ok("vm", "logs", b.vm, "--lines", "0").stdout

    term = console(b)
    try:
        term.expect(b"Leave with Ctrl-]")
        assert libvirt_console_held(b.vm) is True   # libvirt says: someone holds it
        wait_until(term.raw_while_running, 10, "the terminal in raw mode")
        # The shell's prompt may not be on screen yet; a newline asks for a fresh one.
        term.type(b"\r")
        term.expect(b"# ")
        term.type(b"echo $((6*7))-ok\r")
        term.expect(b"42-ok")   # computed by the guest's shell: the typed line says 6*7
        # Other requests are served meanwhile, a locked one too: the session holds no host
        # lock (flock(1) takes it at once).
        assert b.cli.ok("vm", "show", b.vm).returncode == 0
        lock = b.host.agent.root / "state" / "host.lock"
        assert subprocess.run(["flock", "-n", str(lock), "true"]).returncode == 0
        assert b.cli.ok("disk", "list", b.vm).returncode == 0   # takes the host lock
        term.type(b"\x1d")   # Ctrl-]
        assert term.wait() == 0
        assert term.restored(), "the terminal settings were not restored"
        assert b"Left the console of" in term.drain()
    finally:
        term.close()
    wait_until(lambda: not libvirt_console_held(b.vm), 20, "libvirt's console released")


def test_one_console_per_vm_force_takes_over_and_a_dropped_ssh_connection_lets_go(
        booted: Booted) -> None:
    b = booted
    guest_up(b)
    first = console(b)
    try:
        first.expect(b"Leave with Ctrl-]")
        # A second one is refused, naming the holder; exit 1, code CONSOLE_BUSY.
        second = b.cli.run("vm", "console", b.vm, "-o", "json")
        assert second.returncode == 1, second.stderr
        err = error(second)
        assert err["code"] == "CONSOLE_BUSY"
        assert "in use by" in str(err["message"]) and "--force" in str(err["message"])
        plain = b.cli.run("vm", "console", b.vm)
        assert plain.returncode == 1 and "is in use by" in plain.stderr
        # --force takes it: the first session is told so and ends (exit 1: closed by host).
        forced = console(b, "--force")
        try:
            forced.expect(b"taken over from")
            first.expect(b"taken over by")
            assert first.wait() == 1
            assert first.restored()
            assert b"was closed by" in first.drain()
            forced.type(b"\r")
            forced.type(b"echo $((7*6))-forced\r")
            forced.expect(b"42-forced")
            # The holder's SSH connection dies (the client killed): the console is freed,
            # by ppec's registry and by libvirt.
            forced.kill(signal.SIGKILL)
        finally:
            forced.close()
        wait_until(lambda: not libvirt_console_held(b.vm), 30,
                   "the console released after the SSH connection dropped")
        assert "the client closed the connection" in b.host.agent.log()
        again = console(b)
        try:
            again.expect(b"Leave with Ctrl-]")
            wait_until(again.raw_while_running, 10, "the terminal in raw mode")
            # Killed politely (SIGTERM) rather than left with Ctrl-]: the terminal's
            # settings still come back.
            again.proc.send_signal(signal.SIGTERM)
            assert again.wait() == 128 + signal.SIGTERM
            assert again.restored()
        finally:
            again.close()
        wait_until(lambda: not libvirt_console_held(b.vm), 30, "released after SIGTERM")
    finally:
        first.close()


def test_bad_input_unknown_vm_shut_off_vm_and_a_dead_agent(booted: Booted) -> None:
    b = booted
    for args in (["vm", "console", "no-such-vm"], ["vm", "logs", "no-such-vm"],
                 ["vm", "console", "no-such-vm", "--host", "h1"],
                 ["vm", "logs", "no-such-vm", "--host", "h1"]):
        done = b.cli.run(*args, "-o", "json")
        assert done.returncode == 2, (args, done.stderr)
        assert "no-such-vm" in str(error(done)["message"])
    guest_up(b)
    # A session open while the VM is powered off: told in its stream, exit 1.
    term = console(b)
    try:
        term.expect(b"Leave with Ctrl-]")
        # A burst of output first: it all arrives, in order, and the session stays usable.
        term.type(b"\ryes flood | head -n 3000; echo DONE-$((2+2))\r")
        screen = term.expect(b"DONE-4", timeout=180)
        assert screen.count(b"flood\r\n") >= 3000
        b.cli.ok("vm", "stop", b.vm, "--force")
        term.expect(b"closed: " + b.vm.encode() + b" stopped")
        assert term.wait() == 1 and term.restored()
        assert b"was closed by h1" in term.drain()
    finally:
        term.close()
    assert domain_state(b.vm) == "shut off"
    done = b.cli.run("vm", "console", b.vm, "-o", "json")
    assert done.returncode == 1
    assert error(done)["code"] == "NOT_RUNNING"
    plain = b.cli.run("vm", "console", b.vm)
    assert f"VM {b.vm} is shut-off: it has a console only while it runs" in plain.stderr
    # Its past output is still there to read.
    assert "PPEC-GUEST-UP" in b.cli.ok("vm", "logs", b.vm, "--lines", "0").stdout
    b.host.agent.kill()
    for args in (["vm", "console", b.vm], ["vm", "logs", b.vm]):
        done = b.cli.run(*args, "-o", "json")
        assert done.returncode == 1, (args, done.stderr)
        assert error(done)["code"] == "AGENT_UNREACHABLE"


def test_console_under_maker_checker_is_approved_then_opened_once_by_its_maker(
        cli: Cli, qemu_dir: Path, guest: Path, sshd_ready: None) -> None:
    people = make_people(qemu_dir)
    approvers = install_policy(cli, qemu_dir, people, vm_operations=("delete", "console"))
    with boot_host(cli, qemu_dir, guest, approvers_file=str(approvers)) as b:
        guest_up(b)
        alice = ["--identity", str(people["alice"])]
        made = b.cli.run(*alice, "vm", "console", b.vm, "-o", "json")
        assert made.returncode == 4, made.stderr
        rid = json.loads(made.stdout)["id"]
        again = b.cli.run(*alice, "vm", "console", b.vm)
        assert again.returncode == 4 and f"request {rid}: vm.console {b.vm} still waits" \
            in again.stdout
        # The agent itself refuses a console without an approval, whatever the CLI does.
        refused = agent_call(b.host.agent.socket, "vm.console", name=b.vm)
        assert refused["error"]["code"] == "FORBIDDEN"
        approved = b.cli.run("--identity", str(people["bob"]), "request", "approve", str(rid))
        assert approved.returncode == 0, approved.stderr
        assert f"approved by bob; alice runs it (`ppec vm console {b.vm}`)" in approved.stdout
        # The checker cannot run it for her: `request execute` refuses, nothing is spent.
        refused_exec = b.cli.run("request", "execute", str(rid))
        assert refused_exec.returncode == 1 and "is run by its maker, alice" \
            in refused_exec.stderr
        assert json.loads(b.cli.ok("request", "show", str(rid), "-o", "json").stdout)[
            "state"] == "approved"
        # An approval is its maker's: bob gets a request of his own.
        assert b.cli.run("--identity", str(people["bob"]), "vm", "console",
                         b.vm).returncode == 4
        term = PtyRun([*alice, "vm", "console", b.vm], b.cli.env)
        try:
            term.expect(b"Leave with Ctrl-]")
            term.type(b"\r")
            term.type(b"echo $((6*7))-approved\r")
            term.expect(b"42-approved")
            term.type(b"\x1d")
            assert term.wait() == 0
        finally:
            term.close()
        shown = json.loads(b.cli.ok("request", "show", str(rid), "-o", "json").stdout)
        assert shown["state"] == "executed"
        trail = [e["action"] for e in json.loads(
            b.cli.ok("audit", "list", "-o", "json").stdout)["entries"] if e["request_id"] == rid]
        assert trail == ["request", "approve", "execute", "executed"]
        b.cli.ok("audit", "verify")
        # One approval, one session: the next console needs a new request.
        next_req = b.cli.run(*alice, "vm", "console", b.vm, "-o", "json")
        assert next_req.returncode == 4
        rid2 = json.loads(next_req.stdout)["id"]
        b.cli.ok("--identity", str(people["bob"]), "request", "approve", str(rid2))
        # Approved, but the VM is off when alice comes: refused, the request failed, and the
        # trail says so.
        b.cli.ok("vm", "stop", b.vm, "--force")
        late = b.cli.run(*alice, "vm", "console", b.vm, "-o", "json")
        assert late.returncode == 1 and error(late)["code"] == "NOT_RUNNING"
        shown = json.loads(b.cli.ok("request", "show", str(rid2), "-o", "json").stdout)
        assert shown["state"] == "failed" and "shut-off" in shown["note"]
        b.cli.ok("audit", "verify")


def agent_call(path: Path, method: str, **params: object) -> dict[str, object]:
    """One request straight to the agent's socket, bypassing the CLI."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(path))
        s.sendall(json.dumps({"v": 1, "id": 1, "method": method, "params": params}).encode()
                  + b"\n")
        return dict(json.loads(s.makefile("rb").readline()))
