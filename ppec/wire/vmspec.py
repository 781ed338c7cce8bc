"""The one VM shape, from the CLI's options to the agent's domain XML, and its wire form.

``Shape`` is what placement and NUMA fitting need (sizes and the pinning policy);
``VmSpec`` adds what only the building host needs (name, image, boot, NICs, SSH keys,
user-data). The wire form of ``vm.create`` is ``VmSpec.to_params()``, read back by
``VmSpec.from_params()`` after the method table has checked types and bounds.
``VmSpec.document()`` is the VM as one versioned JSON document, stored whole in the
operator's store and the host's ledger (keys by fingerprint, user-data by digest), so any
host or view can read the VM without asking for its parts. Stdlib only: both sides import
it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ppec.core.errors import BadInput
from ppec.wire import guest
from ppec.wire.guest import Nic
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
           "KernelBoot", "Nic", "Pinning", "Policy", "Shape", "Threads", "VmSpec", "literal"]

L = TypeVar("L", bound=str)
# The stored document's layout (VmSpec.document); a reader refuses a newer one by name.
DOCUMENT_VERSION = 1


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
    hugepages: int = 0           # KiB per page backing the memory (dedicated); 0: ordinary

    def check(self, vcpus: int, memory_mib: int = 0) -> None:
        if self.policy == "shared" and (self.nodes or self.threads != "prefer"
                                        or self.emulator != "share"):
            raise BadInput("--numa-nodes, --threads and --emulator place pinned vCPUs: "
                           "they need --numa dedicated")
        if self.nodes > vcpus:
            raise BadInput(f"--numa-nodes {self.nodes} is more than the {vcpus} vCPUs")
        if self.hugepages and self.policy != "dedicated":
            raise BadInput("--hugepages backs memory bound to NUMA nodes: it needs "
                           "--numa dedicated")
        if self.hugepages and memory_mib * 1024 % (self.hugepages * max(self.nodes, 1)):
            raise BadInput(f"--memory {memory_mib} MiB is not a whole number of "
                           f"{self.hugepages // 1024} MiB pages per NUMA node")


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
    nics: tuple[Nic, ...] = ()          # the first is the primary (default route)
    ssh_keys: tuple[str, ...] = ()      # public key lines, for the guest's default user
    user_data: str = ""                 # the operator's, merged with ppec's by the seed

    def to_params(self) -> dict[str, Any]:
        """The ``vm.create`` parameters (the wire form)."""
        s, p = self.shape, self.shape.pinning
        params: dict[str, Any] = {
            "name": self.name, "vcpus": s.vcpus, "memory_mib": s.memory_mib,
            "disk_bytes": s.disk_bytes, "image": self.image, "numa": p.policy,
            "numa_nodes": p.nodes, "threads": p.threads, "emulator": p.emulator}
        if p.hugepages:   # absent when 0: documents of ordinary VMs stay as they were
            params["hugepages"] = p.hugepages
        if self.boot is not None:
            params["boot"] = self.boot.to_wire()
        if self.nics:
            params["nics"] = [n.to_wire() for n in self.nics]
        if self.ssh_keys:
            params["ssh_keys"] = list(self.ssh_keys)
        if self.user_data:
            params["user_data"] = self.user_data
        return params

    def document(self) -> dict[str, Any]:
        """The VM as one versioned document (what the store and the ledger keep)."""
        params = self.to_params()
        for secret in ("ssh_keys", "user_data"):
            params.pop(secret, None)
        return {"v": DOCUMENT_VERSION, **params, "boot": params.get("boot"),
                **guest.document(self.nics, self.ssh_keys, self.user_data)}

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> VmSpec:
        """A stored document read back (keys and user-data are only fingerprints there,
        so the spec has none: the seed ISO on the host holds them)."""
        return cls.from_params({k: v for k, v in document.items()
                                if k not in ("v", "ssh_keys", "user_data")})

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> VmSpec:
        """Read checked ``vm.create`` parameters back (types and bounds already hold)."""
        pinning = Pinning(policy=literal(params.get("numa", "shared"), POLICIES, "numa"),
                          nodes=int(params.get("numa_nodes") or 0),
                          threads=literal(params.get("threads", "prefer"), THREADS, "threads"),
                          emulator=literal(params.get("emulator", "share"), EMULATORS,
                                           "emulator"),
                          hugepages=int(params.get("hugepages") or 0))
        boot = params.get("boot")
        return cls(name=str(params["name"]),
                   shape=Shape(int(params["vcpus"]), int(params["memory_mib"]),
                               int(params["disk_bytes"]), pinning),
                   image=str(params.get("image") or ""),
                   boot=KernelBoot.from_wire(boot) if boot is not None else None,
                   nics=guest.nics_from_wire(params.get("nics") or []),
                   ssh_keys=guest.check_ssh_keys(params.get("ssh_keys") or []),
                   user_data=guest.check_user_data(params.get("user_data") or ""))
