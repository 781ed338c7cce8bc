"""A host to bootstrap: a real sshd on a loopback address whose root accepts a bootstrap
key for a shell, its authorized_keys inside an install root the test owns (every path
ppec writes lives under that root: /opt/ppec, /etc/ppec, root/.ssh)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from tests.realparts import Cli, Sshd, make_key, wait_until

OTHER_LINES = [
    "# keys of the people who run this host",
    'from="10.9.9.9",no-pty ssh-ed25519 '
    "AAAAC3NzaC1lZDI1NTE5AAAAIHCsWE0d6YLz4eqDPT0gNk3d5nmSpuyF9JqLHmyq2Zbl alice@example",
    "",
]


@dataclass
class BootHost:
    root: Path              # the install root: the host's / for everything ppec writes
    address: str
    keys: Path              # where the test keeps its keys
    operator_pub: str = ""
    bootstrap_pub: str = ""
    sshd: Sshd | None = None
    extra_lines: list[str] = field(default_factory=list)

    @property
    def authorized_keys(self) -> Path:
        return self.root / "root" / ".ssh" / "authorized_keys"

    @property
    def operator(self) -> Path:
        return self.keys / "operator"

    @property
    def bootstrap(self) -> Path:
        return self.keys / "bootstrap"

    @property
    def config(self) -> Path:
        return self.root / "etc" / "ppec" / "agent.toml"

    def start(self) -> BootHost:
        self.keys.mkdir(parents=True, exist_ok=True)
        self.operator_pub = make_key(self.operator)
        self.bootstrap_pub = make_key(self.bootstrap)
        self.authorized_keys.parent.mkdir(parents=True, exist_ok=True)
        self.authorized_keys.write_text("\n".join(
            [OTHER_LINES[0], self.bootstrap_pub, *OTHER_LINES[1:2], *self.extra_lines]) + "\n")
        sshd = Sshd(self.root.parent / f"{self.root.name}-sshd", self.address,
                    agent_socket=Path("/nonexistent"), operator_pubkey="",
                    keys_file=self.authorized_keys).start()
        self.sshd = sshd
        return self

    def add_args(self, name: str, *more: str) -> list[str]:
        assert self.sshd is not None
        return ["host", "add", name, "--address", self.address, "--port", str(self.sshd.port),
                "--identity", str(self.operator), "--install", "--bootstrap-identity",
                str(self.bootstrap), "--install-root", str(self.root), *more]

    def agent_pid(self) -> int | None:
        pidfile = self.root / "run" / "ppec-agent.pid"
        if not pidfile.exists():
            return None
        pid = int(pidfile.read_text())
        return pid if Path(f"/proc/{pid}").exists() else None

    def stop(self) -> None:
        pid = self.agent_pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not Path(f"/proc/{pid}").exists(), 30, "the agent to stop")
        if self.sshd:
            self.sshd.stop()

    def digests(self) -> dict[str, str]:
        """Every file bootstrap owns by content: the venv, the config, authorized_keys
        (state, logs and caches are the agent's, not bootstrap's)."""
        out = {}
        for top in ("opt", "etc", "root"):
            for p in sorted((self.root / top).rglob("*")):
                if p.is_file() and "__pycache__" not in p.parts:
                    out[str(p.relative_to(self.root))] = hashlib.sha256(
                        p.read_bytes()).hexdigest()
        return out


def agent_config(path: Path, host: BootHost, name: str, libvirt_uri: str,
                 **extra: object) -> Path:
    """An agent config whose paths all lie under the host's install root."""
    r = host.root
    doc = {"host": name, "socket": str(r / "run" / "ppec" / "agent.sock"),
           "state_dir": str(r / "var" / "lib" / "ppec"),
           "storage_dir": str(r / "var" / "lib" / "ppec" / "disks"),
           "image_dir": str(r / "var" / "lib" / "ppec" / "images"),
           "approvers_file": str(r / "etc" / "ppec" / "approvers.toml"),
           "libvirt_uri": libvirt_uri, "reserved_memory": "0", **extra}
    path.write_bytes(tomli_w.dumps(doc).encode())
    return path


def ssh_as(key: Path, host: BootHost, command: str,
           stdin: str = "") -> subprocess.CompletedProcess[str]:
    """OpenSSH's own client (not ppec's), with the host key this test trusts."""
    assert host.sshd is not None
    known = host.keys / "known_hosts"
    pub = (host.sshd.host_key.with_suffix(".pub")).read_text().split()
    known.write_text(f"[{host.address}]:{host.sshd.port} {pub[0]} {pub[1]}\n")
    return subprocess.run(
        ["ssh", "-i", str(key), "-p", str(host.sshd.port), "-o", "IdentitiesOnly=yes",
         "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", f"root@{host.address}", command],
        capture_output=True, text=True, timeout=60, input=stdin, check=False)


def ppec_lines(host: BootHost) -> list[str]:
    blob = host.operator_pub.split()[1]
    return [ln for ln in host.authorized_keys.read_text().splitlines() if blob in ln]


def cli_env(cli: Cli) -> dict[str, str]:
    return cli.env
