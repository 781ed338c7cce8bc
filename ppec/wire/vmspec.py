"""The one VM shape, from the CLI's options to the agent's domain XML, and its wire form.

``Shape`` is what placement and NUMA fitting need (sizes and the pinning policy);
``VmSpec`` adds what only the building host needs (name, image, boot, network). The wire
form of ``vm.create`` is ``VmSpec.to_params()``, read back by ``VmSpec.from_params()``
after the method table has checked types and bounds. Stdlib only: both sides import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ppec.core.errors import BadInput
from ppec.wire.limits import (
    EMULATORS,
    MAX_CMDLINE,
    MAX_DISK_BYTES,
    MAX_MEMORY_MIB,
    MAX_NUMA_NODES,
    MAX_VCPUS,
    MIN_DISK_BYTES,
    MIN_MEMORY_MIB,
    POLICIES,
    THREADS,
    Emulator,
    Policy,
    Threads,
)

__all__ = ["EMULATORS", "MAX_CMDLINE", "MAX_DISK_BYTES", "MAX_MEMORY_MIB", "MAX_NUMA_NODES",
           "MAX_VCPUS", "MIN_DISK_BYTES", "MIN_MEMORY_MIB", "POLICIES", "THREADS", "Emulator",
           "KernelBoot", "Pinning", "Policy", "Shape", "Threads", "VmSpec", "literal"]

L = TypeVar("L", bound=str)


def literal(value: object, allowed: tuple[L, ...], what: str) -> L:
    """``value`` as one of ``allowed`` (a Literal type), or a clear BAD_PARAMS error."""
    for choice in allowed:
        if value == choice:
            return choice
    raise BadInput(f"{what} {value!r} is not one of {', '.join(allowed)}", code="BAD_PARAMS")


@dataclass(frozen=True)
class Pinning:
    """How the VM's vCPUs and memory sit on the host's NUMA nodes (docs/numa.md)."""

    policy: Policy = "shared"
    nodes: int = 0               # spread over this many NUMA nodes; 0: as few as fit
    threads: Threads = "prefer"
    emulator: Emulator = "share"

    def check(self, vcpus: int) -> None:
        if self.policy == "shared" and (self.nodes or self.threads != "prefer"
                                        or self.emulator != "share"):
            raise BadInput("--numa-nodes, --threads and --emulator place pinned vCPUs: "
                           "they need --numa dedicated")
        if self.nodes > vcpus:
            raise BadInput(f"--numa-nodes {self.nodes} is more than the {vcpus} vCPUs")


@dataclass(frozen=True)
class Shape:
    """Sizes and pinning: what placement, capacity and the agent's fit all read."""

    vcpus: int
    memory_mib: int
    disk_bytes: int = 0
    pinning: Pinning = field(default_factory=Pinning)


@dataclass(frozen=True)
class KernelBoot:
    """Direct kernel boot (files from the host's image dir) instead of the disk's loader."""

    kernel: str
    initrd: str = ""
    cmdline: str = ""

    def to_wire(self) -> dict[str, str]:
        return {"kernel": self.kernel, "initrd": self.initrd, "cmdline": self.cmdline}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> KernelBoot:
        unknown = set(data) - {"kernel", "initrd", "cmdline"}
        if unknown or not isinstance(data.get("kernel"), str) or not all(
                isinstance(data.get(k, ""), str) for k in ("initrd", "cmdline")):
            raise BadInput("boot must be {kernel: path, initrd: path, cmdline: text}",
                           code="BAD_PARAMS")
        if len(data.get("cmdline", "")) > MAX_CMDLINE:
            raise BadInput(f"kernel command line longer than {MAX_CMDLINE} characters")
        return cls(data["kernel"], data.get("initrd", ""), data.get("cmdline", ""))


@dataclass(frozen=True)
class VmSpec:
    """Everything one host needs to build one VM."""

    name: str
    shape: Shape
    image: str = ""
    boot: KernelBoot | None = None
    # {"address": "10.0.0.5/24", "gateway": …, "dns": […]}: checked by the agent's seed
    # builder, which is the one reader of its fields.
    network: Mapping[str, Any] | None = None

    def to_params(self) -> dict[str, Any]:
        """The ``vm.create`` parameters (the wire form)."""
        s, p = self.shape, self.shape.pinning
        params: dict[str, Any] = {
            "name": self.name, "vcpus": s.vcpus, "memory_mib": s.memory_mib,
            "disk_bytes": s.disk_bytes, "image": self.image, "numa": p.policy,
            "numa_nodes": p.nodes, "threads": p.threads, "emulator": p.emulator}
        if self.boot is not None:
            params["boot"] = self.boot.to_wire()
        if self.network is not None:
            params["network"] = dict(self.network)
        return params

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> VmSpec:
        """Read checked ``vm.create`` parameters back (types and bounds already hold)."""
        pinning = Pinning(policy=literal(params.get("numa", "shared"), POLICIES, "numa"),
                          nodes=int(params.get("numa_nodes") or 0),
                          threads=literal(params.get("threads", "prefer"), THREADS, "threads"),
                          emulator=literal(params.get("emulator", "share"), EMULATORS,
                                           "emulator"))
        boot = params.get("boot")
        return cls(name=str(params["name"]),
                   shape=Shape(int(params["vcpus"]), int(params["memory_mib"]),
                               int(params["disk_bytes"]), pinning),
                   image=str(params.get("image") or ""),
                   boot=KernelBoot.from_wire(boot) if boot is not None else None,
                   network=params.get("network"))
