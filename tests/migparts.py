"""Hosts that migration can move VMs between: each a libvirtd of its own on this machine
(tests/libvirt-peer.sh: its own mount namespace, host UUID and migration ports), behind
its own real agent and sshd, like the other e2e hosts."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.fleet import SimHost
from tests.realparts import Agent, Sshd, clean_domains, qemu_reason

SCRIPT = Path(__file__).parent / "libvirt-peer.sh"


def peer_reason() -> str | None:
    """Why extra libvirtds cannot run here, or None."""
    reason = qemu_reason()
    if reason:
        return reason
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    if os.geteuid() != 0:
        return "extra libvirtds need root (mount namespaces)"
    return None


@dataclass(frozen=True)
class Peer:
    name: str
    socket: str

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.socket}"

    def virsh(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(["virsh", "-c", self.uri, *args], capture_output=True,
                              text=True, check=False, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"virsh -c {self.uri} {' '.join(args)}: "
                                 f"{done.stderr.strip()}")
        return done.stdout

    def state(self, name: str) -> str | None:
        done = subprocess.run(["virsh", "-c", self.uri, "domstate", name],
                              capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    def clean(self, under: Path) -> None:
        clean_domains(under, self.uri)


def start_peer(name: str, index: int) -> Peer:
    done = subprocess.run([str(SCRIPT), "start", name, str(index)], capture_output=True,
                          text=True, check=False, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"libvirt peer {name}: {done.stderr.strip()}")
    return Peer(name, done.stdout.strip().splitlines()[-1])


def stop_peer(name: str) -> None:
    subprocess.run([str(SCRIPT), "stop", name], capture_output=True, check=False, timeout=120)


@dataclass
class MigHost(SimHost):
    """A simulated host (sshd in front of an agent) on a libvirtd of its own."""

    peer: Peer

    def config(self, **more: Any) -> None:
        """Restart the agent with more config (a fault step, say)."""
        self.agent.kill()
        self.agent.extra.update(more)
        self.agent.start()


def make_hosts(root: Path, peers: list[Peer], operator_pub: str,
               extra: Callable[[str], dict[str, Any]] | None = None) -> list[MigHost]:
    """One host per peer (h1, h2, ...; sshd on 127.0.0.31, .32, ...)."""
    hosts = []
    for i, peer in enumerate(peers):
        name = f"h{i + 1}"
        agent = Agent(root / name / "agent", host=name, libvirt_uri=peer.uri, extra={
            "domain_type": "qemu", "cpu_overcommit": 12.0,
            "migration_uri": f"qemu+unix:///system?socket={peer.socket}",
            "migration_address": "tcp://127.0.0.1", **(extra(name) if extra else {})}).start()
        sshd = Sshd(root / name / "sshd", address=f"127.0.0.{31 + i}",
                    agent_socket=agent.socket, operator_pubkey=operator_pub).start()
        hosts.append(MigHost(name, agent, sshd, peer))
    return hosts
