"""Placement on the operator side: snapshots and HA membership in, a decision out."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ppec.core.errors import BadInput, NoCapacity
from ppec.core.units import check_label, parse_memory_mib, parse_size
from ppec.operator import ipdb, snapshots
from ppec.operator.config import Config
from ppec.operator.context import Context
from ppec.operator.store import Host

# The model only: ppec.placement loads numpy when an index is first built, not here.
from ppec.placement.model import SPREADS, Spread
from ppec.wire.vmspec import Pinning, Shape, literal

if TYPE_CHECKING:
    from ppec.placement import Decision, FleetIndex, HostSnapshot, Request



def shape_from(config: Config, flavor: str | None, cpus: int | None, memory: str | None,
               disk: str | None, pinning: Pinning) -> Shape:
    """A flavor and/or explicit sizes as a Shape (explicit ones win): for the CLI's
    options and the HTTP capacity question alike. Callers say what must be given."""
    base = config.flavor(flavor) if flavor else None
    vcpus = cpus if cpus is not None else base.cpus if base else 0
    mib = parse_memory_mib(memory) if memory else base.memory_mib if base else 0
    disk_bytes = parse_size(disk, what="disk size") if disk else base.disk_bytes if base else 0
    return Shape(vcpus, mib, disk_bytes, pinning)


def spread_level(value: str) -> Spread:
    """``--spread`` as a Spread, or a clear BAD_INPUT error naming the choices."""
    try:
        return literal(value, SPREADS, "--spread")
    except BadInput:
        raise BadInput(f"--spread must be one of {', '.join(SPREADS)}, "
                       f"not {value!r}") from None


@dataclass(frozen=True)
class Ask:
    """A placement request: the VM's shape and where it may go."""

    shape: Shape
    region: str = ""
    vrf: str = ""
    tags: tuple[str, ...] = ()
    ha_group: str = ""
    spread: Spread = "host"
    nic_vrfs: tuple[str, ...] = ()      # VRFs of NICs besides the primary (--nic)
    images: tuple[str, ...] = ()        # digests of the catalogue images it is built from
    push_images: bool = True            # [images] push_on_create

    def check(self, hosts: list[Host], pools_by_vrf: dict[str, int] | None = None) -> None:
        """Refuse what no fleet could satisfy, before asking any host (exit 2)."""
        self.shape.pinning.check(self.shape.vcpus, self.shape.memory_mib)
        if self.ha_group:
            check_label(self.ha_group, "HA group name")
        if self.spread != "host" and not self.ha_group:
            raise BadInput("--spread applies to an HA group: give --ha-group too")
        known_regions = sorted({h.region for h in hosts if h.region})
        if self.region and self.region not in known_regions:
            raise BadInput(f"unknown region {self.region!r}; regions in the inventory: "
                           f"{', '.join(known_regions) or 'none'}", code="NOT_FOUND")
        known_vrfs = sorted({h.vrf for h in hosts if h.vrf})
        if self.vrf and self.vrf not in known_vrfs:
            raise BadInput(f"unknown VRF {self.vrf!r}: no host is in it; VRFs in the "
                           f"inventory: {', '.join(known_vrfs) or 'none'}", code="NOT_FOUND")
        if self.vrf and pools_by_vrf is not None and self.vrf not in pools_by_vrf:
            raise BadInput(f"VRF {self.vrf!r} has no IP pool: its VMs could get no address "
                           f"(add one with `ppec ip pool add`)", code="NO_POOL")

    def request(self) -> Request:
        """The placement request, with its NUMA request: the one place both are built."""
        from ppec.numa import Request as NumaRequest
        from ppec.placement import Request
        s, p = self.shape, self.shape.pinning
        numa = None if p.policy == "shared" else NumaRequest(
            s.vcpus, s.memory_mib, policy="dedicated", numa_nodes=p.nodes or None,
            threads=p.threads, emulator=p.emulator)
        return Request(vcpus=s.vcpus, memory_mib=s.memory_mib, disk_bytes=s.disk_bytes,
                       numa=numa, region=self.region, vrf=self.vrf, tags=frozenset(self.tags),
                       ha_group=self.ha_group, spread=self.spread,
                       nic_vrfs=frozenset(self.nic_vrfs), images=frozenset(self.images),
                       push_images=self.push_images)


@dataclass
class Fleet:
    """Placement input: the hosts as snapshots (indexed on first use), the HA groups'
    members, and the free addresses per VRF (None when no IP pool exists: the IP database
    is unused)."""

    hosts: list[HostSnapshot]
    members: dict[str, list[tuple[str, str, str]]]     # group -> (vm, host, key)
    spreads: dict[str, str]                            # group -> spread level
    free_ips: dict[str, int] | None = None
    _index: FleetIndex | None = field(default=None, repr=False, compare=False)

    @property
    def index(self) -> FleetIndex:
        """The hosts as vectors for ``place``, built when first asked (it loads numpy,
        which a decision over one host, `vm create --host`, does without)."""
        if self._index is None:
            from ppec.placement import FleetIndex
            self._index = FleetIndex(self.hosts)
        return self._index

    def snapshot(self, host: str) -> HostSnapshot:
        return next(h for h in self.hosts if h.name == host)

    def ha_state(self, ask: Ask) -> tuple[dict[str, str], dict[str, int]]:
        taken: dict[str, str] = {}
        count: dict[str, int] = {}
        for vm, host, key in self.members.get(ask.ha_group, []):
            taken.setdefault(key, vm)
            count[host] = count.get(host, 0) + 1
        return taken, count


Fresh = Literal["stored", "fresh", "refresh"]


def fleet_from_store(ctx: Context, hosts: list[Host], snaps: Fresh,
                     free_ips: dict[str, int] | Literal["count"] | None = "count") -> Fleet:
    """The fleet from the store: its snapshots as stored (``place``), the fresh ones kept
    and the rest asked anew (``vm create``: see snapshots.current), or every host asked
    (``place --refresh``). ``free_ips``: the caller's count, when it made one already."""
    if snaps == "refresh":
        data = snapshots.refresh(ctx, hosts)
    elif snaps == "fresh":
        data = snapshots.current(ctx, hosts, ctx.config.fresh_for)
    else:
        data = snapshots.for_placement(ctx)
    found = [snapshots.to_placement(h, data.get(h.name)) for h in hosts]
    groups = dict(ctx.store.ha_groups())
    return Fleet(found, {g: ctx.store.ha_members(g) for g in groups}, groups,
                 ipdb.free_by_vrf(ctx.store) if free_ips == "count" else free_ips)


def fleet_from_file(path: Path) -> tuple[Fleet, list[Host]]:
    entries, groups = snapshots.load_file(path)
    found = [snapshots.to_placement(h, s) for h, s in entries]
    members = {g: [(str(m[0]), str(m[1]), str(m[2])) for m in v["members"]]
               for g, v in groups.items()}
    return Fleet(found, members, {g: v["spread"] for g, v in groups.items()}), \
        [h for h, _ in entries]


def decide(ctx: Context, fleet: Fleet, ask: Ask, *, now: float | None = None,
           scores: bool = True) -> Decision:
    """The ranked candidates and the rejections. ``scores=False`` (a create, which shows
    none): a fleet of one host is decided by the filters alone, without numpy."""
    if ask.ha_group in fleet.spreads and fleet.spreads[ask.ha_group] != ask.spread:
        raise BadInput(f"HA group {ask.ha_group} spreads by {fleet.spreads[ask.ha_group]}; "
                       f"--spread {ask.spread} contradicts it", code="HA_SPREAD")
    taken, count = fleet.ha_state(ask)
    now = time.time() if now is None else now
    if not scores and len(fleet.hosts) == 1:   # `vm create --host`
        from ppec.placement.filters import place_one
        return place_one(fleet.hosts[0], ask.request(), now=now,
                         policy=ctx.config.placement_policy(), ha_taken=taken,
                         free_ips=fleet.free_ips)
    from ppec.placement import place
    return place(fleet.index, ask.request(), now=now,
                 policy=ctx.config.placement_policy(), ha_taken=taken, group_count=count,
                 free_ips=fleet.free_ips)


def explain(ctx: Context, fleet: Fleet, ask: Ask, *, now: float | None = None
            ) -> list[dict[str, Any]]:
    from ppec.placement import explain as explain_all
    taken, count = fleet.ha_state(ask)
    return explain_all(fleet.index, ask.request(), now=time.time() if now is None else now,
                       policy=ctx.config.placement_policy(), ha_taken=taken,
                       group_count=count, free_ips=fleet.free_ips)


def no_capacity(name: str, decision: Decision, refusals: list[str]) -> NoCapacity:
    reasons = [r.reason for r in sorted(decision.rejected, key=lambda r: r.host)] + refusals
    return NoCapacity(f"no host can take {name}: " + "; ".join(reasons),
                      details={"rejected": [asdict(r) for r in decision.rejected],
                               "refusals": refusals})
