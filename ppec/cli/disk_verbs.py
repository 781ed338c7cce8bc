"""What the ``ppec disk`` verbs do, without typer: parse sizes, one library call, render.

``ppec.cli.disk`` declares the verbs for typer (options, help); ``ppec.cli.quick`` runs the
same functions when a command line needs no help and no usage error, without loading the
CLI framework at all.
"""

from __future__ import annotations

import sys
from typing import Any

from ppec.cli import output
from ppec.cli.output import Fmt
from ppec.cli.run import Run
from ppec.core.errors import BadInput
from ppec.core.units import format_size, parse_size
from ppec.operator import disks

COLUMNS = [("target", "TARGET"), ("bus", "BUS"), ("size", "SIZE"), ("kind", "KIND"),
           ("state", "STATE"), ("live", "LIVE"), ("persistent", "PERSISTENT"),
           ("volume", "VOLUME"), ("path", "PATH")]


def _human(disk: dict[str, Any]) -> dict[str, Any]:
    size = int(disk.get("size_bytes") or 0)
    return {**disk, "size": format_size(size) if size else "-"}


def list_(run: Run, vm: str, *, host: str | None, fmt: Fmt) -> None:
    doc = disks.list_(run.ctx, vm, host)
    if fmt is not Fmt.json:
        doc = {**doc, "disks": [_human(d) for d in doc["disks"]]}
    output.emit_list(fmt, doc, "disks", COLUMNS)
    if fmt is not Fmt.json:
        for note in doc.get("resolved", []):
            sys.stderr.write(f"ppec: {note}\n")


def attach(run: Run, vm: str, *, size: str | None, path: str | None, bus: str,
           host: str | None, fmt: Fmt) -> None:
    if (size is None) == (path is None):
        raise BadInput("give --size (a new volume) or --path (an existing one)")
    doc = disks.attach(run.ctx, vm, size_bytes=parse_size(size, what="disk size")
                       if size else 0, path=path or "", bus=bus, host=host)
    output.emit_record(fmt, _human(doc) if fmt is not Fmt.json else doc,
                       [("target", "target"), ("bus", "bus"), ("size", "size"),
                        ("path", "path"), ("serial", "serial"), ("live", "live"),
                        ("persistent", "persistent")],
                       message=f"attached {doc['target']} to {vm} on {doc['host']}")


def detach(run: Run, vm: str, target: str, *, timeout: int, keep_volume: bool,
           host: str | None, fmt: Fmt) -> None:
    from ppec.operator import makerchecker  # signing and audit: only detach needs them
    run.hold_if("disk", "detach", lambda signer: makerchecker.request_disk_detach(
        run.ctx, signer, vm, target, keep_volume=keep_volume, timeout=timeout, host=host))
    doc = disks.detach(run.ctx, vm, target, timeout=timeout, keep_volume=keep_volume,
                       host=host)
    note = f"volume {doc['volume']}" + (f" ({doc['reason']})" if doc.get("reason") else "")
    output.emit_record(fmt, doc, message=f"detached {target} from {vm}; {note}")
