"""The console over the agent's local socket (host address `local`), and `vm logs --follow`
riding out an agent restart, on the real booting test guest."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path

from tests.e2e.terminal import PtyRun, guest_boot_args
from tests.realparts import PPEC, Agent, Cli, unique


def read_until(proc: subprocess.Popen[bytes], text: str, seen: bytearray,
               timeout: float = 120) -> None:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{text!r} never came; got {bytes(seen[-1500:])!r}"
        if select.select([fd], [], [], min(left, 0.5))[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"the follower ended; got {bytes(seen[-1500:])!r}"
            seen += chunk


def test_local_console_and_a_follow_that_outlives_an_agent_restart(
        cli: Cli, guest_agent: Agent, guest: Path) -> None:
    cli.ok("host", "add", "g", "--address", "local", "--socket", str(guest_agent.socket))
    vm = unique("loc")
    cli.ok("vm", "create", vm, *guest_boot_args(guest))
    follow = subprocess.Popen([PPEC, "vm", "logs", vm, "-f"], env=cli.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = bytearray()
    try:
        read_until(follow, "PPEC-GUEST-UP", seen)
        guest_agent.kill(signal.SIGKILL)   # the follower's connection breaks
        guest_agent.start()
        term = PtyRun(["vm", "console", vm], cli.env)
        try:
            # Typed before ppec has even connected: kept for the guest, not flushed.
            term.type(b"\recho MARK-$((40+2))\r")
            term.expect(b"Leave with Ctrl-]")
            term.expect(b"MARK-42")
            term.type(b"\x1d")
            assert term.wait() == 0 and term.restored()
        finally:
            term.close()
        # What the guest printed after the restart reaches the same follower.
        read_until(follow, "MARK-42", seen)
    finally:
        follow.send_signal(signal.SIGINT)
        assert follow.wait(timeout=30) == 0
    # The guest's shell asks the terminal for the cursor position (ESC [ 6 n): shown, not
    # sent raw to the reader's terminal; JSON keeps it as written.
    shown = cli.ok("vm", "logs", vm, "--lines", "0").stdout
    assert "\x1b" not in shown and "^[[6n" in shown and "MARK-42" in shown
    raw = json.loads(cli.ok("vm", "logs", vm, "--lines", "0", "-o", "json").stdout)
    assert "\x1b[6n" in raw["text"] and raw["host"] == "g" and raw["name"] == vm
    assert raw["more"] is False and raw["truncated"] is False
    # --lines: the last N lines exactly as the file has them.
    log = guest_agent.console(vm).path.read_bytes().decode()   # \r\n kept
    last = json.loads(cli.ok("vm", "logs", vm, "--lines", "3", "-o", "json").stdout)["text"]
    assert last == "\n".join(log.rstrip("\n").split("\n")[-3:]) + log[len(log.rstrip("\n")):]
