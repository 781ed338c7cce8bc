"""Where an installed agent lives on its host, and the files bootstrap writes there.

``root`` is "" on a real host; a test (or a chroot) gives a directory that then holds every
path below, so an install never touches the machine's own ppec."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

import tomli_w

from ppec.core.errors import BadInput

PACKAGES = ("python3", "python3-venv", "libvirt-daemon-system", "qemu-system-x86",
            "qemu-utils", "genisoimage")
SUPPORTED = (("debian", "12"),)


@dataclass(frozen=True)
class Layout:
    root: str = ""

    def at(self, path: str) -> str:
        return f"{self.root.rstrip('/')}{path}"

    @property
    def venv(self) -> str:
        return self.at("/opt/ppec")

    @property
    def agent(self) -> str:
        return f"{self.venv}/bin/ppec-agent"

    @property
    def python(self) -> str:
        return f"{self.venv}/bin/python"

    @property
    def config(self) -> str:
        return self.at("/etc/ppec/agent.toml")

    @property
    def unit(self) -> str:
        return self.at("/etc/systemd/system/ppec-agent.service")

    @property
    def authorized_keys(self) -> str:
        return self.at("/root/.ssh/authorized_keys")

    @property
    def stamp(self) -> str:
        """What the running agent was started with (config hash, release digest)."""
        return self.at("/etc/ppec/.agent-started")

    @property
    def pidfile(self) -> str:
        """Where PID 1 is not systemd: the agent started directly, its PID here."""
        return self.at("/run/ppec-agent.pid")

    @property
    def log(self) -> str:
        return self.at("/var/log/ppec-agent.log")

    @property
    def staging(self) -> str:
        return self.at("/var/tmp/ppec-bootstrap")

    def serve_argv(self) -> list[str]:
        return [self.agent, "serve", "--config", self.config]

    def unit_text(self) -> str:
        return ("[Unit]\nDescription=ppec host agent\n"
                "After=network-online.target libvirtd.service\nWants=libvirtd.service\n\n"
                "[Service]\n"
                f"ExecStart={shlex.join(self.serve_argv())}\n"
                "Restart=always\nRestartSec=2\n"
                # the agent execs itself on update; VMs are libvirtd's, never ours to kill
                "KillMode=process\n\n"
                "[Install]\nWantedBy=multi-user.target\n")


def agent_config(layout: Layout, host: str, networks: dict[str, str], reserved_cpus: str,
                 supervised: bool) -> dict[str, Any]:
    """The agent config bootstrap writes when none is given: this host's name, its VRFs'
    bridges and reserved CPUs; paths under the layout's root."""
    doc: dict[str, Any] = {"host": host, "socket": layout.at("/run/ppec/agent.sock"),
                           "state_dir": layout.at("/var/lib/ppec"),
                           "storage_dir": layout.at("/var/lib/ppec/disks"),
                           "image_dir": layout.at("/var/lib/ppec/images"),
                           "approvers_file": layout.at("/etc/ppec/approvers.toml"),
                           "supervised": supervised}
    if reserved_cpus:
        doc["reserved_cpus"] = reserved_cpus
    if networks:
        doc["networks"] = {vrf: {"bridge": br} for vrf, br in sorted(networks.items())}
    return doc


def config_bytes(doc: dict[str, Any]) -> bytes:
    return tomli_w.dumps(doc).encode()


def parse_networks(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        vrf, sep, bridge = item.partition("=")
        if not sep or not vrf or not bridge:
            raise BadInput(f"--network {item!r}: expected VRF=BRIDGE, e.g. blue=br-blue")
        out[vrf] = bridge
    return out
