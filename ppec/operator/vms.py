"""Creating a VM across the fleet: claim, place, build, with retries (the other verbs:
``lifecycle``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from ppec.core.errors import (
    AlreadyExists,
    BadInput,
    NoCapacity,
    PpecError,
    TransportError,
)
from ppec.core.units import check_vm_name
from ppec.operator.context import Context
from ppec.operator.fleet.client import AgentClient
from ppec.operator.store import HaConflict, Host
from ppec.wire.vmspec import KernelBoot, VmSpec

if TYPE_CHECKING:
    from ppec.operator.choose import Ask, Fleet
    from ppec.operator.claim import Claim
    from ppec.operator.vmimages import VmImages
    from ppec.placement import Decision

__all__ = ["MAX_ATTEMPTS", "GuestAsk", "create"]
MAX_ATTEMPTS = 3   # agents tried when one refuses late (its live view differs)
MAX_ROUNDS = 20    # re-placements after HA races; each round tries new hosts only


def create(ctx: Context, name: str, ask: Ask, *, image: str = "", host: str | None = None,
           dry_run: bool = False, boot: KernelBoot | None = None,
           guest: GuestAsk | None = None) -> dict[str, Any]:
    """Place, claim, build: the name and the HA spread key are claimed in the store first
    (constraints), then the host's agent builds under its lock and re-checks the fit.
    An agent that refuses late, or an HA member that lands first, moves the VM to the next
    candidate; nothing is left behind when all fail."""
    check_vm_name(name)
    if host and ask.region:
        raise BadInput("--host and --region contradict each other: give one")
    inventory = ctx.store.hosts()
    # Placement, claims and addresses are loaded by the commands that place (create), not
    # by list/show/start/stop.
    from ppec.operator import choose as scheduler
    from ppec.operator import ipdb
    from ppec.operator.claim import Claim
    free_ips = ipdb.free_by_vrf(ctx.store)
    ask.check(inventory, free_ips)
    guest = guest or GuestAsk()
    for vrf, address in guest.nics:
        ipdb.check_nic(ctx.store, vrf, address)
    from ppec.operator import vmimages
    wanted = vmimages.resolve(ctx.store, image, boot, ask.shape.disk_bytes)
    ask = replace(ask, nic_vrfs=tuple(vrf for vrf, _ in guest.nics),
                  images=wanted.digests, push_images=vmimages.push_on_create(ctx))
    ssh_keys = tuple(dict.fromkeys([*ctx.config.guest_ssh_keys(), *guest.ssh_keys]))
    mac_prefix = ctx.config.mac_prefix()
    # Checked again by the store's constraint when claiming; this only fails fast.
    if not dry_run and (existing := ctx.store.vm_or_none(name)) is not None:
        raise AlreadyExists(f"a VM named {name} already exists on host {existing.host}")
    candidates = _candidates(ctx, inventory, host)
    if ask.ha_group and not dry_run:
        ctx.store.ha_group(ask.ha_group, ask.spread)
    fleet = scheduler.fleet_from_store(ctx, candidates, "fresh", free_ips)
    decision = scheduler.decide(ctx, fleet, ask, scores=False)
    if dry_run:
        if not decision.ranked:
            raise scheduler.no_capacity(name, decision, [])
        return {"name": name, "dry_run": True, "host": decision.host,
                "ranked": [c.host for c in decision.ranked],
                "rejected": [asdict(r) for r in decision.rejected]}
    claim = Claim(ctx.store, name, ask.shape, wanted.image, ask.ha_group, mac_prefix=mac_prefix,
                  extra_nics=guest.nics)
    spec = VmSpec(name, ask.shape, wanted.image, wanted.boot, ssh_keys=ssh_keys,
                  user_data=guest.user_data)
    with claim.guard():
        return _attempts(ctx, claim, spec, ask, fleet, decision, wanted)


@dataclass(frozen=True)
class GuestAsk:
    """What the guest is given besides its shape: NICs on other VRFs (``--nic``), SSH
    public keys (``--ssh-key``, read and checked by the CLI) and the operator's user-data."""

    nics: tuple[tuple[str, str], ...] = ()      # (VRF, wanted address or "")
    ssh_keys: tuple[str, ...] = ()
    user_data: str = ""


def _candidates(ctx: Context, inventory: list[Host], host: str | None) -> list[Host]:
    if host:
        target = ctx.store.host(host)
        ctx.client(target).call("ping")   # a named host that is down: exit 1, not 3
        return [target]
    if not inventory:
        raise NoCapacity("no hosts in the inventory; add one with `ppec host add`")
    return inventory


def _attempts(ctx: Context, claim: Claim, spec: VmSpec, ask: Ask, fleet: Fleet,
              decision: Decision, wanted: VmImages) -> dict[str, Any]:
    """Try the ranked hosts in turn, at most MAX_ATTEMPTS refusals in all; an HA conflict
    re-places with the group as it is now (new hosts only)."""
    from ppec.operator import choose as scheduler
    from ppec.operator.vmimages import ensure_on
    refusals: list[str] = []
    tried: set[str] = set()
    for _ in range(MAX_ROUNDS):
        hosts = [c.host for c in decision.ranked if c.host not in tried]
        if not hosts:
            break
        for host in hosts:
            tried.add(host)
            snap = fleet.snapshot(host)
            try:
                claim.place_on(host, snap.spread_key(ask.spread) if ask.ha_group else "")
            except HaConflict as e:
                # Another create of this group landed there meanwhile.
                refusals.append(f"{host}: {e.message}")
                break
            nics = claim.allocate_nics(snap.vrf)
            try:
                ensure_on(ctx, host, wanted, snap.images)   # NO_SPACE: the next host
                result = _build(ctx, claim, replace(spec, nics=nics))
            except NoCapacity as e:
                claim.release_nics()
                refusals.append(f"{host}: {e.message}")
                if len(refusals) >= MAX_ATTEMPTS:
                    break
                continue
            return {**result, "host": host, "attempts": len(tried), "ip": claim.address}
        if len(refusals) >= MAX_ATTEMPTS:
            break
        if ask.ha_group:
            # The group as it is now, less our own claim.
            fleet.members[ask.ha_group] = [m for m in ctx.store.ha_members(ask.ha_group)
                                           if m[0] != claim.name]
        decision = scheduler.decide(ctx, fleet, ask, scores=False)
    raise scheduler.no_capacity(claim.name, decision, refusals)


def _build(ctx: Context, claim: Claim, spec: VmSpec) -> dict[str, Any]:
    client = ctx.client(ctx.store.host(claim.host))
    with claim.sending():
        result = _create_on(client, spec)
    claim.built(str(result["state"]), result.pop("spec", None) or spec.document())
    return result


def _create_on(client: AgentClient, spec: VmSpec) -> dict[str, Any]:
    try:
        return dict(client.call("vm.create", **spec.to_params()))
    except TransportError as e:
        # The connection broke: the agent may have built the VM, or may still be (queued
        # behind its lock). Ask again on a fresh connection; only a VM found is an answer.
        try:
            return dict(client.call("vm.get", name=spec.name))
        except PpecError:
            from ppec.operator.claim import OutcomeUnknown
            raise OutcomeUnknown(
                f"{e.message}; whether {spec.name} was created is unknown (its name and "
                f"address stay reserved): check with `ppec vm show {spec.name}`, remove with "
                f"`ppec vm delete {spec.name}`", host=client.host.name) from None
