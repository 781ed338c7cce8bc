"""A fleet of simulated hosts: each a real sshd on its own loopback address, in front of
its own agent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.realparts import Agent, Sshd, unique


@dataclass
class SimHost:
    name: str
    agent: Agent
    sshd: Sshd

    def add_args(self, key: Path) -> list[str]:
        return ["host", "add", self.name, "--address", self.sshd.address, "--port",
                str(self.sshd.port), "--user", "root", "--identity", str(key)]


def make_fleet(root: Path, count: int, uri: str, operator_pub: str,
               extra: dict[str, object] | None = None,
               env: Callable[[str], dict[str, str]] | None = None,
               own_image_dir: bool = False) -> list[SimHost]:
    """``env(name)``: extra environment for that host's agent (e.g. its own PYTHONPATH);
    ``own_image_dir``: each agent keeps images under its own dir (on one machine, the
    simulated hosts' ``/var/lib/ppec/images`` would be one directory)."""
    hosts = []
    for i in range(count):
        name = f"h{i + 1}"
        more = {"image_dir": str(root / name / "images")} if own_image_dir else {}
        agent = Agent(root / name / "agent", host=unique(name), libvirt_uri=uri,
                      extra={**(extra or {}), **more}, env=env(name) if env else {}).start()
        sshd = Sshd(root / name / "sshd", address=f"127.0.0.{11 + i}",
                    agent_socket=agent.socket, operator_pubkey=operator_pub).start()
        hosts.append(SimHost(name, agent, sshd))
    return hosts


