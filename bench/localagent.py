"""What the benchmarks on this machine's libvirtd share: running and timing commands, and a
real agent in a scratch dir QEMU can reach, with its own ppec store (run as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
PPEC = str(BIN / "ppec")
VIRSH = ["virsh", "-c", "qemu:///system"]


def run(*cmd: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return done.stdout


def timed(*cmds: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    for cmd in cmds:
        run(*cmd, env=env)
    return time.perf_counter() - start


@dataclass(frozen=True)
class LocalAgent:
    root: Path              # scratch dir: agent.toml, state/, disks/, the operator's store
    env: dict[str, str]     # for `ppec`: its own XDG dirs
    host: str               # the inventory name `ppec host add` gave it

    @property
    def socket(self) -> Path:
        return self.root / "agent.sock"


@contextmanager
def local_agent(host: str, config: str = "", vrf: str = "") -> Iterator[LocalAgent]:
    """A `ppec-agent serve` on qemu:///system, added to a fresh store as ``host`` (in
    ``vrf``); ``config`` is more agent TOML. Everything goes when the block ends."""
    root = Path(tempfile.mkdtemp(prefix="ppec-bench-", dir="/var/tmp"))
    root.chmod(0o711)  # QEMU (libvirt-qemu) must reach the disks below
    (root / "agent.toml").write_text(
        f'host = "bench"\nsocket = "{root}/agent.sock"\nstate_dir = "{root}/state"\n'
        f'storage_dir = "{root}/disks"\nlibvirt_uri = "qemu:///system"\n' + config)
    env = {**os.environ, "XDG_DATA_HOME": str(root / "data"),
           "XDG_CONFIG_HOME": str(root / "config"), "NO_COLOR": "1"}
    agent = subprocess.Popen([str(BIN / "ppec-agent"), "serve", "--config",
                              str(root / "agent.toml")], stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if (root / "agent.sock").exists():
                break
            time.sleep(0.1)
        run(PPEC, "host", "add", host, "--address", "local", "--socket",
            str(root / "agent.sock"), *(["--vrf", vrf] if vrf else []), env=env)
        yield LocalAgent(root, env, host)
    finally:
        agent.terminate()
        agent.wait()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def bridge(name: str) -> Iterator[str]:
    """A Linux bridge with no host address (and IPv6 off): VMs' NICs join it, and no
    packet is sent anywhere. Removed when the block ends."""
    run("ip", "link", "add", name, "type", "bridge")
    try:
        Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").write_text("1")
        run("ip", "link", "set", name, "up")
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
