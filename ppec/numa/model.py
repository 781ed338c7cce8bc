"""What a NUMA fit takes and gives: the request, what a VM holds, the plan, the refusal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Policy = Literal["dedicated", "shared"]
Threads = Literal["prefer", "isolate", "require"]
Emulator = Literal["share", "isolate"]


@dataclass(frozen=True)
class Request:
    vcpus: int
    memory_mib: int
    policy: Policy = "dedicated"
    numa_nodes: int | None = None
    threads: Threads = "prefer"
    emulator: Emulator = "share"


@dataclass(frozen=True)
class Allocation:
    """What one VM holds on a host: exclusive CPUs and memory per host cell."""

    vm: str
    policy: Policy
    vcpus: int
    cpus: frozenset[int]                      # held exclusively; empty for shared VMs
    memory: tuple[tuple[int, int], ...]       # (host cell, MiB); cell -1: not bound


@dataclass(frozen=True)
class GuestCell:
    id: int
    host_cell: int
    vcpus: tuple[int, ...]
    memory_mib: int


@dataclass(frozen=True)
class Plan:
    policy: Policy
    vcpu_pins: tuple[int, ...]          # host CPU of vCPU i; empty for shared
    emulator_cpus: frozenset[int]       # empty for shared
    cells: tuple[GuestCell, ...]        # empty for shared
    held: frozenset[int]                # every CPU this VM holds exclusively
    float_cpus: frozenset[int]          # shared only: where its vCPUs may run
    threads_per_core: int               # guest threads per core: >1 only when the vCPUs
                                        # sit on whole sibling sets, in order

    def allocation(self, vm: str, vcpus: int, memory_mib: int) -> Allocation:
        if self.policy == "shared":
            return Allocation(vm, "shared", vcpus, frozenset(), ((-1, memory_mib),))
        return Allocation(vm, "dedicated", vcpus, self.held,
                          tuple((c.host_cell, c.memory_mib) for c in self.cells))


@dataclass(frozen=True)
class NoFit:
    reasons: tuple[str, ...]

    def __str__(self) -> str:
        return "; ".join(self.reasons)
