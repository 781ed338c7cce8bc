"""VM lifecycle across the fleet: create, list, show, start, stop, delete."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from ppec import placement
from ppec.context import Context
from ppec.errors import AlreadyExists, BadInput, NoCapacity, NotFound, PpecError, TransportError
from ppec.fleet.client import AgentClient, HostResult, fan_out
from ppec.store import Host
from ppec.units import check_vm_name

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3   # hosts tried when an agent refuses late (its live view differs)


def _view(host: Host, info: dict[str, Any]) -> placement.HostView:
    return placement.HostView(
        name=host.name, region=host.region, drained=host.drained,
        cpus=int(info["cpus"]) - len(info.get("reserved_cpus", [])),
        memory_mib=int(info["memory_mib"]) - int(info.get("reserved_memory_mib", 0)),
        committed_mib=int(info.get("committed_memory_mib", 0)),
        storage_free_bytes=int(info.get("storage_free_bytes", 0)))


def choose(ctx: Context, req: placement.Request, host: str | None) -> dict[str, Any]:
    """Rank the hosts that can take ``req`` from their agents' live answers."""
    if host:
        # One named host: its failure is the answer (exit 1), not a placement verdict.
        target = ctx.store.host(host)
        results = [HostResult(target.name, True, ctx.client(target).call("host.info"))]
        candidates = [target]
    else:
        candidates = ctx.store.hosts()
        if not candidates:
            raise NoCapacity("no hosts in the inventory; add one with `ppec host add`")
        results = fan_out(candidates, lambda h: ctx.client(h).call("host.info"))
    by_name = {h.name: h for h in candidates}
    views, unreachable = [], []
    for r in results:
        if r.ok:
            views.append(_view(by_name[r.host], r.value))
        else:
            assert r.error is not None
            unreachable.append(placement.Rejection(r.host, "unreachable", str(r.error)))
    decision = placement.place(views, req)
    rejected = [*unreachable, *decision.rejected]
    return {"ranked": list(decision.ranked),
            "rejected": [asdict(r) for r in sorted(rejected, key=lambda r: r.host)]}


@dataclass(frozen=True)
class NumaOptions:
    """How the VM sits on its host's NUMA nodes (see ppec.numa)."""

    policy: str = "shared"
    nodes: int = 0          # 0: one node when it fits, else the fewest
    threads: str = "prefer"
    emulator: str = "share"

    def params(self) -> dict[str, Any]:
        return {"numa": self.policy, "numa_nodes": self.nodes, "threads": self.threads,
                "emulator": self.emulator}


def create(ctx: Context, name: str, *, vcpus: int, memory_mib: int, disk_bytes: int,
           image: str = "", host: str | None = None, region: str = "",
           dry_run: bool = False, numa: NumaOptions = NumaOptions()) -> dict[str, Any]:
    check_vm_name(name)
    if numa.policy == "shared" and (numa.nodes or numa.threads != "prefer"
                                    or numa.emulator != "share"):
        raise BadInput("--numa-nodes, --threads and --emulator place pinned vCPUs: "
                       "they need --numa dedicated")
    if numa.nodes > vcpus:
        raise BadInput(f"--numa-nodes {numa.nodes} is more than the {vcpus} vCPUs")
    if host and region:
        raise BadInput("--host and --region contradict each other: give one")
    req = placement.Request(vcpus=vcpus, memory_mib=memory_mib, disk_bytes=disk_bytes,
                            region=region)
    # Checked again by the store's constraint at reservation; this only fails fast.
    if not dry_run and (existing := ctx.store.vm_or_none(name)) is not None:
        raise AlreadyExists(f"a VM named {name} already exists on host {existing.host}")
    plan = choose(ctx, req, host)
    if not plan["ranked"]:
        reasons = "; ".join(r["reason"] for r in plan["rejected"])
        raise NoCapacity(f"no host can take {name}: {reasons}", details=plan)
    if dry_run:
        return {"name": name, "dry_run": True, "host": plan["ranked"][0], **plan}

    ctx.store.reserve_vm(name, plan["ranked"][0], vcpus, memory_mib, disk_bytes, image)
    refusals: list[str] = []
    try:
        for host_name in plan["ranked"][:MAX_ATTEMPTS]:
            target = ctx.store.host(host_name)
            ctx.store.set_vm(name, host=host_name)
            try:
                result = _create_on(ctx.client(target), name, {
                    "vcpus": vcpus, "memory_mib": memory_mib, "disk_bytes": disk_bytes,
                    "image": image, **numa.params()})
            except NoCapacity as e:
                refusals.append(str(e))
                continue
            ctx.store.set_vm(name, state=result["state"])
            return {**result, "host": host_name, "attempts": len(refusals) + 1}
    except BaseException:
        if (row := ctx.store.vm_or_none(name)) is not None and row.state == "creating":
            ctx.store.forget_vm(name)
        raise
    ctx.store.forget_vm(name)
    raise NoCapacity(f"no host could take {name}: " + "; ".join(refusals),
                     details={"refusals": refusals})


def _create_on(client: AgentClient, name: str, params: dict[str, Any]) -> dict[str, Any]:
    try:
        return dict(client.call("vm.create", name=name, **params))
    except TransportError as e:
        # The connection broke after the request left: the agent may have built the VM.
        # Ask again on a fresh connection rather than guess.
        try:
            return dict(client.call("vm.get", name=name))
        except NotFound:
            raise e from None
        except PpecError:
            raise PpecError(f"{e}; whether {name} was created is unknown: check with "
                            f"`ppec vm show {name} --host {client.host.name}`",
                            code="OUTCOME_UNKNOWN", host=client.host.name) from None


def _locate(ctx: Context, name: str, host: str | None) -> Host:
    check_vm_name(name)
    if host:
        return ctx.store.host(host)
    return ctx.store.host(ctx.store.vm(name).host)


def list_all(ctx: Context, host: str | None = None) -> tuple[list[dict[str, Any]],
                                                            list[HostResult]]:
    hosts = [ctx.store.host(host)] if host else ctx.store.hosts()
    results = fan_out(hosts, lambda h: ctx.client(h).call("vm.list"))
    # The inventory name is the host's name to operators, whatever the agent calls itself.
    vms = [{**vm, "host": r.host} for r in results if r.ok for vm in r.value["vms"]]
    return sorted(vms, key=lambda v: (v["name"], v["host"])), [r for r in results if not r.ok]


def show(ctx: Context, name: str, host: str | None = None) -> dict[str, Any]:
    target = _locate(ctx, name, host)
    return {**ctx.client(target).call("vm.get", name=name), "host": target.name}


def xml(ctx: Context, name: str, host: str | None = None) -> dict[str, Any]:
    target = _locate(ctx, name, host)
    return {**ctx.client(target).call("vm.xml", name=name), "host": target.name}


def start(ctx: Context, name: str, host: str | None = None) -> dict[str, Any]:
    target = _locate(ctx, name, host)
    result = {**ctx.client(target).call("vm.start", name=name), "host": target.name}
    _sync_row(ctx, name, result)
    return result


def stop(ctx: Context, name: str, *, force: bool = False, timeout: int = 60,
         host: str | None = None) -> dict[str, Any]:
    target = _locate(ctx, name, host)
    result = {**ctx.client(target).call("vm.stop", name=name, force=force, timeout=timeout),
              "host": target.name}
    _sync_row(ctx, name, result)
    return result


def delete(ctx: Context, name: str, host: str | None = None) -> dict[str, Any]:
    target = _locate(ctx, name, host)
    try:
        result = {**ctx.client(target).call("vm.delete", name=name), "host": target.name}
    except NotFound:
        if ctx.store.vm_or_none(name) is None:
            raise
        # The host no longer has it (deleted behind ppec's back): drop the stale record.
        result = {"name": name, "host": target.name, "deleted": True,
                  "note": f"{name} was already gone from {target.name}; store record removed"}
    if (row := ctx.store.vm_or_none(name)) is not None and row.host == target.name:
        ctx.store.forget_vm(name)
    return result


def _sync_row(ctx: Context, name: str, result: dict[str, Any]) -> None:
    row = ctx.store.vm_or_none(name)
    if row is not None and row.host == result.get("host"):
        ctx.store.set_vm(name, state=result["state"])
