"""What placement takes and gives: frozen dataclasses, nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Literal

# At run time only Request.numa_request needs ppec.numa: `ppec host list` reads Policy
# without loading the NUMA fit.
if TYPE_CHECKING:
    from ppec.numa import Allocation, Topology
    from ppec.numa import Request as NumaRequest
    from ppec.numa.counted import Free

Spread = Literal["host", "rack", "power_domain"]
SPREADS: tuple[Spread, ...] = ("host", "rack", "power_domain")


@dataclass(frozen=True)
class HostSnapshot:
    """One host as its agent last described it, plus its inventory facts."""

    name: str
    topology: Topology
    allocations: tuple[Allocation, ...] = ()
    region: str = ""
    rack: str = ""
    power_domain: str = ""
    vrf: str = ""
    tags: frozenset[str] = frozenset()
    drained: bool = False
    reachable: bool = True
    error: str = ""
    taken_at: float = 0.0
    cost: float = 0.0                  # per hour
    power_idle_w: float = 0.0
    power_max_w: float = 0.0
    overcommit: float = 4.0            # shared vCPUs per CPU not dedicated
    storage_free_bytes: int = 0
    # Measured by the agent over the interval before the snapshot (None: a snapshot from
    # an agent that did not measure): host CPUs' worth of CPU all its VMs used, their RSS.
    vm_cpu_used: float | None = None
    vm_rss_mib: int | None = None
    networks: frozenset[str] = frozenset()   # VRFs the agent has a network for
    images: frozenset[str] = frozenset()     # SHA-256 digests of the images it holds

    def spread_key(self, level: Spread) -> str:
        return {"host": self.name, "rack": self.rack,
                "power_domain": self.power_domain}[level]

    @cached_property
    def summary(self) -> Summary:
        return Summary.of(self)


@dataclass(frozen=True)
class Summary:
    """Numbers derived from a snapshot once, for cheap filtering and weighing."""

    cpus: int                          # usable (not reserved)
    dedicated: int                     # CPUs held by dedicated VMs
    shared_vcpus: int
    memory_mib: int
    used_mib: int
    node_free_cpus: tuple[int, ...]
    node_free_mib: tuple[int, ...]
    vms: int

    @property
    def pool(self) -> int:
        return self.cpus - self.dedicated

    @property
    def free_mib(self) -> int:
        return self.memory_mib - self.used_mib

    @staticmethod
    def of(h: HostSnapshot) -> Summary:
        topo = h.topology
        held = {c for a in h.allocations for c in a.cpus}
        usable = topo.cpu_ids - topo.reserved
        free_cpus, free_mib = [], []
        for cell in topo.cells:
            ids = {c.id for c in cell.cpus} - topo.reserved
            free_cpus.append(len(ids - held))
            bound = sum(m for a in h.allocations for c, m in a.memory if c == cell.id)
            free_mib.append(cell.memory_mib - bound)
        return Summary(
            cpus=len(usable), dedicated=len(held & usable),
            shared_vcpus=sum(a.vcpus for a in h.allocations if a.policy == "shared"),
            memory_mib=sum(c.memory_mib for c in topo.cells),
            used_mib=sum(m for a in h.allocations for _, m in a.memory),
            node_free_cpus=tuple(free_cpus), node_free_mib=tuple(free_mib),
            vms=len(h.allocations))


@dataclass(frozen=True)
class Request:
    vcpus: int
    memory_mib: int
    disk_bytes: int = 0
    numa: NumaRequest | None = None      # None: shared, like ppec.numa's default
    region: str = ""
    vrf: str = ""
    tags: frozenset[str] = frozenset()
    ha_group: str = ""
    spread: Spread = "host"
    nic_vrfs: frozenset[str] = frozenset()   # VRFs of NICs besides the primary
    images: frozenset[str] = frozenset()     # catalogue images the VM is built from
    push_images: bool = True                 # a host without them gets them pushed first

    @property
    def numa_request(self) -> NumaRequest:
        from ppec.numa import Request as NumaRequest
        return self.numa or NumaRequest(self.vcpus, self.memory_mib, policy="shared")


@dataclass(frozen=True)
class Weights:
    """Multipliers for each weigher; 0 turns one off. Scores are each in [0, 1]."""

    cost: float = 1.0          # cheaper hosts first
    power: float = 2.0         # no idle host woken while a busy one fits
    pack: float = 1.0          # fuller hosts first (strategy pack) or emptier (spread)
    numa: float = 0.5          # hosts where the VM leaves the largest NUMA holes
    anti_affinity: float = 1.0  # soft: fewer members of the VM's HA group
    image: float = 4.0         # hosts holding the VM's images (no push before the build)


@dataclass(frozen=True)
class Policy:
    strategy: Literal["pack", "spread"] = "pack"
    weights: Weights = field(default_factory=Weights)
    stale_after: float = 600.0     # seconds; older snapshots are not used
    max_candidates: int = 3        # hosts verified in order and handed to the caller


@dataclass(frozen=True)
class Rejection:
    host: str
    rule: str
    reason: str


@dataclass(frozen=True)
class Candidate:
    host: str
    score: float
    weights: tuple[tuple[str, float], ...]     # weigher -> its score in [0, 1]
    notes: tuple[str, ...] = ()                # why, in words (e.g. "idle: waking costs 120 W")


@dataclass(frozen=True)
class Decision:
    ranked: tuple[Candidate, ...]
    rejected: tuple[Rejection, ...]
    examined: int

    @property
    def host(self) -> str | None:
        return self.ranked[0].host if self.ranked else None


def free_counts(h: HostSnapshot) -> Free:
    """The host's free state as counts, from its summary (``ppec.numa.counted``): for a
    stored host, no allocation is decoded."""
    from ppec.numa.counted import Free
    s = h.summary
    return Free(h.topology.cell_ids, list(s.node_free_cpus),
                list(s.node_free_mib), s.shared_vcpus, s.memory_mib, s.used_mib)


def with_allocation(h: HostSnapshot, a: Allocation) -> HostSnapshot:
    """``h`` with one more VM: its summary carried forward by that VM alone, not recomputed
    from every allocation (a placement applied before the next decision: the placements
    bench, an evacuation plan). Equal to ``Summary.of`` of the result (a test holds it)."""
    from dataclasses import replace
    new = replace(h, allocations=(*h.allocations, a))
    s, topo = h.summary, h.topology
    mine = a.cpus - topo.reserved
    bound = dict.fromkeys((c.id for c in topo.cells), 0)
    for cell, mib in a.memory:
        if cell in bound:
            bound[cell] += mib
    node_cpus = tuple(free - sum(1 for c in cell.cpus if c.id in mine) if mine else free
                      for free, cell in zip(s.node_free_cpus, topo.cells, strict=True))
    node_mib = tuple(free - bound[cell.id]
                     for free, cell in zip(s.node_free_mib, topo.cells, strict=True))
    new.__dict__["summary"] = Summary(
        cpus=s.cpus, dedicated=s.dedicated + len(mine),
        shared_vcpus=s.shared_vcpus + (a.vcpus if a.policy == "shared" else 0),
        memory_mib=s.memory_mib, used_mib=s.used_mib + sum(m for _, m in a.memory),
        node_free_cpus=node_cpus, node_free_mib=node_mib, vms=s.vms + 1)
    return new
