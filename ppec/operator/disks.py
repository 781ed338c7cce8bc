"""Data disks of a VM, through its host's agent: list, attach, detach."""

from __future__ import annotations

from typing import Any

from ppec.core.units import check_disk_target
from ppec.operator.context import Context, locate


def list_(ctx: Context, vm: str, host: str | None = None) -> dict[str, Any]:
    target = locate(ctx, vm, host)
    return {**ctx.client(target).call("disk.list", name=vm), "host": target.name}


def attach(ctx: Context, vm: str, *, size_bytes: int = 0, path: str = "",
           bus: str = "virtio", host: str | None = None) -> dict[str, Any]:
    target = locate(ctx, vm, host)
    return {**ctx.client(target).call("disk.attach", name=vm, size_bytes=size_bytes,
                                      path=path, bus=bus), "host": target.name}


def detach(ctx: Context, vm: str, target: str, *, timeout: int = 20,
           keep_volume: bool = False, path: str = "", host: str | None = None,
           approval: dict[str, Any] | None = None) -> dict[str, Any]:
    """Detach; ``approval`` is the maker-checker envelope the agent verifies itself, and
    ``path`` the volume it names."""
    check_disk_target(target)
    where = locate(ctx, vm, host)
    return {**ctx.client(where).call("disk.detach", approval=approval, name=vm, target=target,
                                     timeout=timeout, keep_volume=keep_volume, path=path),
            "host": where.name}
