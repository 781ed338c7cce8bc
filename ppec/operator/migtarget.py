"""Where a migrating VM goes: placement's own filters over every host but its source (HA
group, NUMA fit, the VRF's network, the image or its push), or the one host named."""

from __future__ import annotations

from typing import Any

from ppec.core.errors import BadInput, NoCapacity
from ppec.operator import choose, fleetsim, images, vmimages
from ppec.operator.context import Context
from ppec.operator.store import Host
from ppec.operator.store.records import VmRow
from ppec.wire.limits import EMULATORS, POLICIES, THREADS
from ppec.wire.vmspec import KernelBoot, Pinning, Shape, literal


def ha_group_of(ctx: Context, name: str) -> tuple[str, str]:
    """(group, spread) of the VM's HA group, or ("", "host")."""
    for group, spread in ctx.store.ha_groups():
        if any(m[0] == name for m in ctx.store.ha_members(group)):
            return group, spread
    return "", "host"


def spread_key(ctx: Context, group: str, host: Host) -> str:
    spread = dict(ctx.store.ha_groups()).get(group, "host")
    return {"host": host.name, "rack": host.rack, "power_domain": host.power_domain}[spread]


def images_of(ctx: Context, doc: dict[str, Any]) -> vmimages.VmImages:
    """The catalogue images the VM's document names (``sha256:…``), as a create has them."""
    boot = KernelBoot.from_wire(doc["boot"]) if doc.get("boot") else None
    refs = [doc.get("image") or ""] + ([boot.kernel, boot.initrd] if boot else [])
    digests = {r.removeprefix("sha256:") for r in refs if r.startswith("sha256:")}
    needed = tuple(i for i in images.versions(ctx.store) if i.digest in digests)
    return vmimages.VmImages(str(doc.get("image") or ""), boot,
                             tuple({i.digest: i for i in needed}.values()))


def ask_of(ctx: Context, name: str, doc: dict[str, Any], disks: list[dict[str, Any]],
           wanted: vmimages.VmImages) -> choose.Ask:
    pinning = Pinning(policy=literal(doc.get("numa", "shared"), POLICIES, "numa"),
                      nodes=int(doc.get("numa_nodes") or 0),
                      threads=literal(doc.get("threads", "prefer"), THREADS, "threads"),
                      emulator=literal(doc.get("emulator", "share"), EMULATORS, "emulator"))
    # The data disks move too: the target needs room for them as well.
    disk_bytes = int(doc["disk_bytes"]) + sum(int(d["bytes"]) for d in disks)
    vrfs = [str(n["vrf"]) for n in doc.get("nics") or []]
    group, spread = ha_group_of(ctx, name)
    return choose.Ask(shape=Shape(int(doc["vcpus"]), int(doc["memory_mib"]), disk_bytes,
                                  pinning),
                      vrf=vrfs[0] if vrfs else "", nic_vrfs=tuple(vrfs[1:]),
                      ha_group=group, spread=choose.spread_level(spread),
                      images=wanted.digests, push_images=vmimages.push_on_create(ctx))


def choose_target(ctx: Context, row: VmRow, info: dict[str, Any], to: str) -> Host:
    """The host to move to (images it lacks pushed first), or NO_CAPACITY with every
    host's reason."""
    if to and to == row.host:
        raise BadInput(f"{row.name} already runs on {to}; --to names another host")
    hosts = [ctx.store.host(to)] if to else \
        [h for h in ctx.store.hosts() if h.name != row.host]
    if not hosts:
        raise NoCapacity(f"no host besides {row.host} to move {row.name} to")
    wanted = images_of(ctx, info["document"])
    ask = ask_of(ctx, row.name, info["document"], info["disks"], wanted)
    fleet = choose.fleet_from_store(ctx, hosts, "fresh", free_ips=None)
    fleetsim.without_member(fleet, row.name, ask.ha_group)
    decision = choose.decide(ctx, fleet, ask, scores=len(hosts) > 1)
    if not decision.ranked:
        raise choose.no_capacity(row.name, decision, [])
    chosen = decision.ranked[0].host
    vmimages.ensure_on(ctx, chosen, wanted, fleet.snapshot(chosen).images)
    return ctx.store.host(chosen)



