"""Driving `ppec vm console` as a person would: a real process on a real pseudo-terminal,
and libvirt itself (not ppec) asked whether a domain's console is held."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import termios
import time
from pathlib import Path

from tests.realparts import PPEC, QEMU_URI


class PtyRun:
    """``ppec ARGS`` (or another program) with its stdin, stdout and stderr on a new pty;
    the test holds the master side (the keyboard and screen) and keeps the slave open to
    read its settings after the process is gone."""

    def __init__(self, args: list[str], env: dict[str, str], program: str = PPEC) -> None:
        self.master, self.slave = os.openpty()
        self.before = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen([program, *args], stdin=self.slave, stdout=self.slave,
                                     stderr=self.slave, env=env, start_new_session=True)
        self.seen = b""

    def expect(self, pattern: bytes | re.Pattern[bytes], timeout: float = 60) -> bytes:
        """Read the screen until ``pattern`` shows (a regex, or bytes literally)."""
        rx = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        while not rx.search(self.seen):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{rx.pattern!r} never showed; screen: "
                                     f"{self.seen[-1500:]!r}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:   # EIO: nothing holds the slave open but us
                    time.sleep(0.05)
        return self.seen

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def raw_while_running(self) -> bool:
        """The terminal is in raw mode now (no echo, no line editing)."""
        lflag = termios.tcgetattr(self.slave)[3]
        return not lflag & (termios.ECHO | termios.ICANON)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"ppec did not exit; screen: {self.seen[-1500:]!r}") \
                from None

    def restored(self) -> bool:
        return termios.tcgetattr(self.slave) == self.before

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def close(self) -> None:
        self.kill()
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def drain(self) -> bytes:
        """Whatever is left on the screen once the process has exited."""
        while select.select([self.master], [], [], 0.2)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.seen += chunk
        return self.seen


def libvirt_console_held(name: str) -> bool:
    """Whether someone holds ``name``'s console, by libvirt's own refusal of a console
    opened without force (the probe lets go at once)."""
    import libvirt
    conn = libvirt.open(QEMU_URI)
    try:
        stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        try:
            conn.lookupByName(name).openConsole(None, stream, 0)
        except libvirt.libvirtError as e:
            if "Active console session" in (e.get_error_message() or ""):
                return True
            raise
        stream.abort()
        return False
    finally:
        conn.close()


def guest_boot_args(guest: Path) -> list[str]:
    return ["--cpus", "1", "--memory", "256M", "--disk", "64M",
            "--kernel", str(guest / "vmlinuz"), "--initrd", str(guest / "initrd.img"),
            "--cmdline", "console=ttyS0 quiet panic=-1"]
