"""Where a migrating VM goes: placement's own filters over every host but its source (HA
group, NUMA fit, the VRF's network, the image or its push), or the one host named."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ppec.core.errors import BadInput, NoCapacity
from ppec.operator import choose, fleetsim, images, vmimages
from ppec.operator.context import Context
from ppec.operator.store import Host
from ppec.operator.store.records import VmRow
from ppec.wire.vmspec import VmSpec


def spread_key(ctx: Context, name: str, host: Host) -> str:
    """The key the VM's HA group counts it under on ``host`` ("": no group)."""
    group, spread = ctx.store.vm_ha_group(name)
    if not group:
        return ""
    return {"host": host.name, "rack": host.rack, "power_domain": host.power_domain}[spread]


def images_of(ctx: Context, spec: VmSpec) -> vmimages.VmImages:
    """The catalogue images the VM's document names (``sha256:…``), as a create has them."""
    boot = spec.boot
    refs = [spec.image] + ([boot.kernel, boot.initrd] if boot else [])
    digests = {r.removeprefix("sha256:") for r in refs if r.startswith("sha256:")}
    needed = tuple(i for i in images.versions(ctx.store) if i.digest in digests)
    return vmimages.VmImages(spec.image, boot, tuple({i.digest: i for i in needed}.values()))


def ask_of(ctx: Context, spec: VmSpec, disks: list[dict[str, Any]],
           wanted: vmimages.VmImages) -> choose.Ask:
    # The data disks move too: the target needs room for them as well.
    shape = replace(spec.shape, disk_bytes=spec.shape.disk_bytes
                    + sum(int(d["bytes"]) for d in disks))
    vrfs = [n.vrf for n in spec.nics]
    group, spread = ctx.store.vm_ha_group(spec.name)
    return choose.Ask(shape=shape, vrf=vrfs[0] if vrfs else "", nic_vrfs=tuple(vrfs[1:]),
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
    spec = VmSpec.from_document(info["document"])
    wanted = images_of(ctx, spec)
    ask = ask_of(ctx, spec, info["disks"], wanted)
    fleet = fleetsim.without_member(
        choose.fleet_from_store(ctx, hosts, "fresh", free_ips=None), row.name, ask.ha_group)
    decision = choose.decide(ctx, fleet, ask, scores=len(hosts) > 1)
    if not decision.ranked:
        raise choose.no_capacity(row.name, decision, [])
    chosen = decision.ranked[0].host
    vmimages.ensure_on(ctx, chosen, wanted, fleet.snapshot(chosen).images)
    return ctx.store.host(chosen)



