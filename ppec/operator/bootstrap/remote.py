"""A root shell on a host being bootstrapped: one SSH connection with the bootstrap key
(that key only), commands run through ``sh -c`` and files sent on stdin. No SFTP: a
minimal sshd may not offer the subsystem, and ``cat`` plus ``mv`` is atomic enough."""

from __future__ import annotations

import base64
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from ppec.core.errors import PpecError, TransportError
from ppec.operator.fleet.ssh import connect, fingerprint


@dataclass(frozen=True)
class Done:
    rc: int
    out: str
    err: str


class Same(str):
    """A step's outcome that changed nothing on the host (a rerun's "packages ok")."""


class BootstrapFailed(PpecError):
    """A step failed on the host; the message names the step and what came before."""

    code = "BOOTSTRAP_FAILED"


class RootShell:
    def __init__(self, *, address: str, port: int, identity: str, known_hosts: Path,
                 accept_new_host_key: bool, pin: str, timeout: float = 15.0) -> None:
        self.where = f"root@{address}:{port}"
        self.client = connect(address=address, port=port, username="root", identity=identity,
                              known_hosts=known_hosts, timeout=timeout, pin=pin,
                              accept_new_host_key=accept_new_host_key, only_identity=True)
        transport = self.client.get_transport()
        assert transport is not None
        self.transport = transport
        self.host_key = fingerprint(transport.get_remote_server_key())

    def run(self, command: str, stdin: bytes = b"", timeout: float = 600.0) -> Done:
        """``command`` under ``sh -c``; its exit status, stdout and stderr."""
        try:
            chan = self.transport.open_session(timeout=30)
            chan.settimeout(timeout)
            chan.exec_command(f"sh -c {shlex.quote(command)}")
            if stdin:
                view = memoryview(stdin)
                while view:
                    view = view[chan.send(view[:1 << 20]):]
            chan.shutdown_write()
            out, err = _drain(chan, time.monotonic() + timeout)
            return Done(chan.recv_exit_status(), out.decode(errors="replace"),
                        err.decode(errors="replace"))
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise TransportError(f"{self.where}: {e or type(e).__name__}") from None

    def check(self, command: str, what: str, stdin: bytes = b"",
              timeout: float = 600.0) -> str:
        done = self.run(command, stdin, timeout)
        if done.rc != 0:
            raise BootstrapFailed(f"{what}: exit {done.rc}: "
                                  f"{(done.err or done.out).strip()[-600:]}")
        return done.out

    def read(self, path: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        done = self.run(f"if [ -e {shlex.quote(path)} ]; then base64 -w0 < "
                        f"{shlex.quote(path)}; else echo ABSENT; fi")
        if done.rc != 0:
            raise BootstrapFailed(f"reading {path}: {done.err.strip()[-300:]}")
        if done.out.strip() == "ABSENT":
            return None
        return base64.b64decode(done.out.strip())

    def write(self, path: str, data: bytes, mode: str = "644") -> None:
        """Replace ``path`` whole: a temporary file beside it, synced, renamed over it."""
        q, tmp = shlex.quote(path), shlex.quote(f"{path}.ppec-new")
        self.check(f"mkdir -p \"$(dirname {q})\" && cat > {tmp} && chmod {mode} {tmp} && "
                   f"sync {tmp} && mv -f {tmp} {q}", f"writing {path}", stdin=data)

    def close(self) -> None:
        self.client.close()


def _drain(chan: paramiko.Channel, deadline: float) -> tuple[bytes, bytes]:
    out, err = bytearray(), bytearray()
    while True:
        if chan.recv_ready():
            out += chan.recv(1 << 16)
        elif chan.recv_stderr_ready():
            err += chan.recv_stderr(1 << 16)
        elif chan.exit_status_ready() and not chan.recv_ready() \
                and not chan.recv_stderr_ready():
            return bytes(out), bytes(err)
        elif time.monotonic() > deadline:
            raise TimeoutError("the command did not finish in time")
        else:
            time.sleep(0.005)
