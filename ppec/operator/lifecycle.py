"""What is done to a VM that exists: list, show, its XML, start, stop, delete.

Apart from ``vms`` (create, with placement and its claims), so that these verbs load
neither: ``ppec vm show``, ``start`` and ``stop`` are quick commands (ppec.cli.quick).
"""

from __future__ import annotations

from typing import Any

from ppec.core.errors import NotFound
from ppec.operator.context import Context, locate
from ppec.operator.fleet.client import HostResult, fan_out


def list_all(ctx: Context, host: str | None = None) -> tuple[list[dict[str, Any]],
                                                            list[HostResult]]:
    hosts = [ctx.store.host(host)] if host else ctx.store.hosts()
    results = fan_out(hosts, lambda h: ctx.client(h).call("vm.list"))
    # The inventory name is the host's name to operators, whatever the agent calls itself.
    vms = [{**vm, "host": r.host} for r in results if r.ok for vm in r.value["vms"]]
    return sorted(vms, key=lambda v: (v["name"], v["host"])), [r for r in results if not r.ok]


def _ask(ctx: Context, name: str, host: str | None, method: str,
         **params: Any) -> dict[str, Any]:
    """``method`` on the agent of the host holding ``name``; its answer, with the host's
    inventory name."""
    target = locate(ctx, name, host)
    return {**ctx.client(target).call(method, name=name, **params), "host": target.name}


def show(ctx: Context, name: str, host: str | None = None) -> dict[str, Any]:
    return _ask(ctx, name, host, "vm.get")


def xml(ctx: Context, name: str, host: str | None = None) -> dict[str, Any]:
    return _ask(ctx, name, host, "vm.xml")


def tuning(ctx: Context, name: str, host: str | None = None) -> dict[str, Any]:
    return _ask(ctx, name, host, "vm.tuning")


def start(ctx: Context, name: str, host: str | None = None) -> dict[str, Any]:
    return _sync_row(ctx, name, _ask(ctx, name, host, "vm.start"))


def stop(ctx: Context, name: str, *, force: bool = False, timeout: int = 60,
         host: str | None = None) -> dict[str, Any]:
    return _sync_row(ctx, name, _ask(ctx, name, host, "vm.stop", force=force,
                                     timeout=timeout))


def delete(ctx: Context, name: str, host: str | None = None,
           approval: dict[str, Any] | None = None) -> dict[str, Any]:
    """Delete a VM; ``approval`` is the maker-checker envelope the agent verifies itself."""
    target = locate(ctx, name, host)
    try:
        result = {**ctx.client(target).call("vm.delete", approval=approval, name=name),
                  "host": target.name}
    except NotFound:
        if ctx.store.vm_or_none(name) is None:
            raise
        # The host no longer has it (deleted behind ppec's back): drop the stale record.
        result = {"name": name, "host": target.name, "deleted": True,
                  "note": f"{name} was already gone from {target.name}; store record removed"}
    if (row := ctx.store.vm_or_none(name)) is not None and row.host == target.name:
        from ppec.operator import ipdb
        result["released"] = ipdb.release_owner(ctx.store, name)
        ctx.store.forget_vm(name)
    return result


def _sync_row(ctx: Context, name: str, result: dict[str, Any]) -> dict[str, Any]:
    """The store's record takes the state the agent reports; ``result`` as it was."""
    row = ctx.store.vm_or_none(name)
    if row is not None and row.host == result.get("host"):
        ctx.store.set_vm(name, state=result["state"])
    return result
