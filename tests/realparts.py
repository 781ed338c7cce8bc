"""Real parts the tests drive: agent processes, sshd per simulated host, libvirt checks.

Nothing here is a fake: agents are real ``ppec-agent serve`` processes, hosts are real
OpenSSH sshd instances on their own loopback addresses, and results are checked with
tools ppec does not control (virsh, /proc, sqlite3 on the ledger file).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

BIN = Path(sys.executable).parent
PPEC = str(BIN / "ppec")
AGENT = str(BIN / "ppec-agent")
FIXTURES = Path(__file__).parent / "fixtures"
TEST_NODE_URI = f"test://{FIXTURES / 'testnode.xml'}"
QEMU_URI = "qemu:///system"
# QEMU runs as libvirt-qemu and must search every directory above a disk: pytest's
# tmp_path (under a 0700 dir) is not; this is.
QEMU_SCRATCH = Path("/var/tmp/ppec-tests")


def qemu_reason() -> str | None:
    """Why real libvirtd + QEMU cannot be used here, or None when it can."""
    if shutil.which("virsh") is None:
        return "virsh is not installed (scripts/setup.sh installs libvirt)"
    done = subprocess.run(["virsh", "-c", QEMU_URI, "version"], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        return f"libvirtd is not running: {done.stderr.strip()}"
    if os.geteuid() != 0:
        return "needs root to use qemu:///system"
    return None


def sshd_reason() -> str | None:
    if not Path("/usr/sbin/sshd").exists():
        return "OpenSSH sshd is not installed (scripts/setup.sh installs openssh-server)"
    if os.geteuid() != 0:
        return "sshd test hosts need root"
    return None


def virsh(*args: str, uri: str = QEMU_URI, check: bool = True) -> str:
    done = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True,
                          check=False, timeout=120)
    if check and done.returncode != 0:
        raise AssertionError(f"virsh {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def clean_domains(under: Path, uri: str = QEMU_URI) -> None:
    """Destroy and undefine every domain of ``uri`` whose XML names a path under
    ``under``: what a failed test left there."""
    for name in virsh("list", "--all", "--name", uri=uri, check=False).split():
        if str(under) in virsh("dumpxml", name, uri=uri, check=False):
            virsh("destroy", name, uri=uri, check=False)
            virsh("undefine", name, uri=uri, check=False)


def domain_state(name: str) -> str | None:
    done = subprocess.run(["virsh", "-c", QEMU_URI, "domstate", name], capture_output=True,
                          text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def qemu_pid(name: str) -> int | None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"qemu-system-x86_64") and \
                f"guest={name},".encode() in b" ".join(cmdline):
            return int(proc.name)
    return None


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def socket_answers(path: Path) -> bool:
    """A ping answered: the agent has finished start-up (recovery) and is serving."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    try:
        s.connect(str(path))
        s.sendall(b'{"v":1,"id":0,"method":"ping","params":{}}\n')
        return b'"ok":true' in s.makefile("rb").readline()
    except OSError:
        return False
    finally:
        s.close()


@dataclass
class Agent:
    """A real ``ppec-agent serve`` process with its own config, state dir and socket."""

    root: Path
    host: str
    libvirt_uri: str = TEST_NODE_URI
    extra: dict[str, Any] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)   # e.g. PYTHONPATH: another ppec

    @property
    def socket(self) -> Path:
        return self.root / "agent.sock"

    @property
    def storage(self) -> Path:
        return self.root / "disks"

    @property
    def ledger(self) -> Path:
        return self.root / "state" / "ledger.db"

    @property
    def config_path(self) -> Path:
        return self.root / "agent.toml"

    def write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = {"host": self.host, "socket": str(self.socket),
                  "state_dir": str(self.root / "state"), "storage_dir": str(self.storage),
                  "libvirt_uri": self.libvirt_uri, "reserved_memory": "0", **self.extra}
        self.config_path.write_bytes(tomli_w.dumps(config).encode())

    def start(self, timeout: float = 60) -> Agent:
        self.write_config()
        log = open(self.root / "agent.log", "ab")  # noqa: SIM115 -- lives with the process
        self.proc = subprocess.Popen([AGENT, "serve", "--config", str(self.config_path),
                                      "--log-level", "DEBUG"], stdout=log, stderr=log,
                                     env={**os.environ, **self.env})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent {self.host} exited: {self.log()[-2000:]}")
            if socket_answers(self.socket):
                return self
            time.sleep(0.05)
        raise AssertionError(f"agent {self.host} did not listen in {timeout}s")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def log(self) -> str:
        return (self.root / "agent.log").read_text(errors="replace")

    def ledger_rows(self) -> dict[str, tuple[str, str]]:
        """name -> (state, disk_path), read with sqlite3, not through ppec."""
        with contextlib.closing(sqlite3.connect(self.ledger)) as db:
            return {n: (s, p) for n, s, p in
                    db.execute("SELECT name, state, disk_path FROM vms")}

    def volumes(self) -> set[str]:
        return {p.name for p in self.storage.iterdir()} if self.storage.exists() else set()

    def disk_rows(self) -> dict[tuple[str, str], tuple[str, str]]:
        """(vm, target) -> (state, path) of the ledger's data disks, read with sqlite3."""
        with contextlib.closing(sqlite3.connect(self.ledger)) as db:
            return {(v, t): (s, p) for v, t, s, p in
                    db.execute("SELECT vm, target, state, path FROM disks")}

    def console(self, vm: str) -> Console:
        return Console(self.root / "state" / "console" / f"{vm}.log")


@dataclass
class Console:
    """A guest's serial console as virtlogd wrote it. The test guest (tests/guest/init)
    prints "PPEC-DISKS vda:<sectors>:<serial> …" whenever its block devices change (a
    shell prompt on the same console may precede it on its line)."""

    path: Path

    def text(self) -> str:
        return self.path.read_text(errors="replace") if self.path.exists() else ""

    def disks(self) -> dict[str, tuple[int, str]] | None:
        """The guest's block devices by its last report: name -> (512-byte sectors, serial)."""
        lines = [ln[ln.index("PPEC-DISKS"):] for ln in self.text().splitlines()
                 if "PPEC-DISKS" in ln]
        if not lines:
            return None
        out = {}
        for item in lines[-1].split()[1:]:
            name, size, serial = [*item.split(":"), "", ""][:3]
            if size:   # a device caught mid-removal has no size: already leaving
                out[name] = (int(size), serial)
        return out

    def wait(self, check: Any, timeout: float = 120) -> dict[str, tuple[int, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            disks = self.disks()
            if disks is not None and check(disks):
                return disks
            time.sleep(0.2)
        raise AssertionError(f"guest console never showed the expected disks; last: "
                             f"{self.disks()}\n{self.text()[-2000:]}")


@dataclass
class Sshd:
    """A real OpenSSH sshd on its own loopback address; its only key runs the proxy."""

    root: Path
    address: str
    agent_socket: Path
    operator_pubkey: str
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    # Another authorized_keys (a host being bootstrapped: root's own, with a shell key)
    keys_file: Path | None = None

    @property
    def host_key(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    def new_host_key(self) -> None:
        for p in (self.host_key, self.host_key.with_suffix(".pub")):
            p.unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(self.host_key)], check=True)

    def start(self) -> Sshd:
        self.root.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        if not self.host_key.exists():
            self.new_host_key()
        if not self.port:
            self.port = free_port(self.address)
        keys = self.keys_file or self.root / "authorized_keys"
        if self.keys_file is None:
            keys.write_text(f'restrict,command="{AGENT} proxy --socket {self.agent_socket}" '
                            f"{self.operator_pubkey}\n")
        (self.root / "sshd_config").write_text("\n".join([
            f"ListenAddress {self.address}:{self.port}",
            f"HostKey {self.host_key}",
            f"PidFile {self.root / 'sshd.pid'}",
            f"AuthorizedKeysFile {keys}",
            "StrictModes no", "UsePAM no", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
            "LogLevel VERBOSE", "MaxStartups 100:30:200", "MaxSessions 100", ""]))
        log = open(self.root / "sshd.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f",
                                      str(self.root / "sshd_config")], stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("sshd exited: "
                                     + (self.root / "sshd.log").read_text()[-2000:])
            with socket.socket() as s:
                if s.connect_ex((self.address, self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise AssertionError("sshd did not listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


def make_key(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "operator", "-f",
                    str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


class Cli:
    """Runs the real ``ppec`` executable with its own XDG dirs, no colour, fixed width."""

    def __init__(self, home: Path) -> None:
        self.env = {**os.environ, "XDG_DATA_HOME": str(home / "data"),
                    "XDG_CONFIG_HOME": str(home / "config"), "NO_COLOR": "1",
                    "COLUMNS": "200", "TERM": "dumb", "HOME": str(home)}
        self.env.pop("PPEC_DB", None)
        self.env.pop("PPEC_CONFIG", None)
        self.env.pop("SSH_AUTH_SOCK", None)  # only the keys a test names

    @property
    def db(self) -> Path:
        return Path(self.env["XDG_DATA_HOME"]) / "ppec" / "ppec.db"

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PPEC, *args], capture_output=True, text=True, env=self.env,
                              timeout=timeout, check=False)

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.run(*args)
        assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
        return done

    def configure(self, toml: str) -> None:
        """This CLI's own operator config file (its XDG config dir) holds ``toml``."""
        path = Path(self.env["XDG_CONFIG_HOME"]) / "ppec" / "config.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(toml)

    def store_vms(self) -> list[str]:
        if not self.db.exists():
            return []
        with contextlib.closing(sqlite3.connect(self.db)) as db:
            return [r[0] for r in db.execute("SELECT name FROM vms ORDER BY name")]


def next_second() -> None:
    """Sleep into the next wall-clock second: the store keeps VM change times in whole
    seconds, so a test that orders changes and snapshots waits for one to pass."""
    time.sleep(1.0 - time.time() % 1.0 + 0.01)


def wait_until(check: Any, timeout: float = 60, what: str = "condition") -> None:
    """Poll ``check()`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never held within {timeout:.0f} s")
        time.sleep(0.1)


def vm_files(*names: str) -> set[str]:
    """The files a VM named so keeps in its host's storage dir: its root disk and the
    cloud-init seed every VM gets."""
    return {f for n in names for f in (f"{n}.qcow2", f"{n}-seed.iso")}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def page_cached(path: Path) -> int:
    """Bytes of ``path`` in the host's page cache (fincore, util-linux)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES",
                          str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.strip() or 0)


def guest_fill(cli: Cli, agent: Agent, guest: Path, mib: int) -> tuple[str, Path, float]:
    """Boot the test guest on ``agent`` (its host already added) told to write ``mib`` MiB
    + fsync to vdb once it appears, attach vdb and wait for the write: the VM, the disk's
    file and the seconds from the attach to the guest's "PPEC-FILL-DONE"."""
    vm = unique("fill")
    cli.ok("vm", "create", vm, "--host", agent.host, "--cpus", "1", "--memory", "256M",
           "--disk", "64M", "--kernel", str(guest / "vmlinuz"), "--initrd",
           str(guest / "initrd.img"), "--cmdline",
           f"console=ttyS0 quiet panic=-1 ppec.fill=vdb:{mib}")
    console = agent.console(vm)
    console.wait(lambda d: "vda" in d)
    start = time.perf_counter()
    doc = json.loads(cli.ok("disk", "attach", vm, "--size", f"{mib + 32}M",
                            "-o", "json").stdout)
    wait_until(lambda: "PPEC-FILL-DONE vdb" in console.text(), 600, "the guest's write")
    return vm, Path(doc["path"]), time.perf_counter() - start
