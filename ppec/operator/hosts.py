"""Host inventory: add, list, show, remove, drain; agent status."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ppec.core.errors import BadInput, PpecError
from ppec.core.units import check_host_name
from ppec.operator.context import Context
from ppec.operator.store import Host


def add(ctx: Context, host: Host, *, accept_new_host_key: bool = False,
        check: bool = True) -> dict[str, Any]:
    """Record a host; unless ``check`` is off, first prove its agent answers as that host."""
    check_host_name(host.name)
    if not host.address:
        raise BadInput("--address is required (a hostname, an IP, or `local`)")
    if not 1 <= host.port <= 65535:
        raise BadInput(f"invalid port {host.port}")
    if host.is_local and host.identity:
        raise BadInput("--identity makes no sense for a local host (it uses the Unix socket)")
    info: dict[str, Any] = {}
    if check:
        from ppec.operator.fleet.client import AgentClient  # `host list` never loads it
        client = AgentClient(host, ctx.reach, accept_new_host_key=accept_new_host_key)
        try:
            info = client.call("ping")
        finally:
            client.close()
    ctx.store.add_host(host)
    return {**host.as_dict(), "agent": info}


def show(ctx: Context, name: str) -> dict[str, Any]:
    host = ctx.store.host(name)
    result: dict[str, Any] = {**host.as_dict(), "vms_in_store": len(ctx.store.vms(name)),
                              "snapshot": stored_state(ctx, name)}
    try:
        result["live"] = ctx.client(host).call("host.info")
        result["reachable"] = True
    except PpecError as e:
        result["live"] = None
        result["reachable"] = False
        result["error"] = {"code": e.code, "message": str(e)}
    return result


def stored_state(ctx: Context, name: str) -> dict[str, Any]:
    """The stored snapshot of host ``name`` as every view judges it (core/freshness.py):
    state, when taken, its age, and ppec's last VM change there."""
    from ppec.operator import snapshots
    from ppec.operator.store import pages, snaprows
    data = snaprows.placement_views(ctx.store, [name]).get(name)
    changed = pages.vm_changes(ctx.store, [name]).get(name)
    state, age = snapshots.freshness(data, time.time(), ctx.config.stale_after(), changed)
    return {"state": state, "taken_at": data["taken_at"] if data else None,
            "age_s": round(age, 1) if data else None, "changed_at": changed,
            "vm_count": data.get("vm_count") if data else None}


def numa(ctx: Context, name: str) -> dict[str, Any]:
    host = ctx.store.host(name)
    return {**ctx.client(host).call("host.numa"), "host": host.name}


@dataclass(frozen=True)
class Status:
    host: str
    ok: bool
    version: str
    latency_ms: float
    error: str
    code: str
    digest: str = ""                 # the agent's release (files + version)
    failed_releases: list[str] = field(default_factory=list)   # rolled back by the host


def status(ctx: Context, names: list[str]) -> list[Status]:
    hosts = [ctx.store.host(n) for n in names] if names else ctx.store.hosts()

    def ping(host: Host) -> tuple[dict[str, Any], float]:
        start = time.perf_counter()
        reply = ctx.client(host).call("ping")
        return reply, (time.perf_counter() - start) * 1000

    from ppec.operator.fleet.client import fan_out
    out = []
    for r in fan_out(hosts, ping):
        if r.ok:
            reply, ms = r.value
            out.append(Status(r.host, True, str(reply.get("version", "")), round(ms, 1), "",
                              "", str(reply.get("digest", "")),
                              [str(d) for d in reply.get("failed_releases", [])]))
        else:
            assert r.error is not None
            out.append(Status(r.host, False, "", 0.0, r.error.message, r.error.code))
    return out

