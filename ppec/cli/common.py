"""What every command shares: opening the context from the global options."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

from ppec.cli import output
from ppec.core.errors import EXIT_FAILED, EXIT_PARTIAL, EXIT_PENDING, BadInput
from ppec.core.units import MIB, parse_size
from ppec.operator.context import Context


@contextmanager
def context() -> Iterator[Context]:
    ctx = Context.open(output.current.get("db"))
    try:
        yield ctx
    finally:
        ctx.close()


def partial_exit(failed: int, total: int) -> None:
    """Exit 5 when some hosts failed, 1 when every host did."""
    if failed:
        raise typer.Exit(EXIT_FAILED if failed == total else EXIT_PARTIAL)


def resources(ctx: Context, flavor: str | None, cpus: int | None, memory: str | None,
              disk: str | None, *, disk_required: bool = True) -> tuple[int, int, int]:
    """(vCPUs, MiB, disk bytes) from a flavor and/or explicit sizes; explicit ones win."""
    if flavor is None and (cpus is None or memory is None or (disk is None and disk_required)):
        raise BadInput("give --flavor, or all of --cpus, --memory" +
                       (" and --disk" if disk_required else ""))
    base = ctx.config.flavor(flavor) if flavor else None
    return (cpus if cpus is not None else base.cpus,  # type: ignore[union-attr]
            parse_size(memory, what="memory") // MIB if memory
            else base.memory_mib,  # type: ignore[union-attr]
            parse_size(disk, what="disk size") if disk
            else (base.disk_bytes if base else 0))


def held(fmt: Any, request: dict[str, Any]) -> None:
    """A request was created instead of acting: say so, exit 4."""
    from ppec.cli.output import Fmt, emit_json
    if fmt is Fmt.json:
        emit_json(request)
    else:
        typer.echo(f"request {request['id']} created: {request['operation']} "
                   f"{request['resource']} waits for a second person's approval "
                   f"(`ppec request approve {request['id']}`)")
    raise typer.Exit(EXIT_PENDING)
