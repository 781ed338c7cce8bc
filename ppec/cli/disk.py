"""``ppec disk``: data disks of a running (or stopped) VM: list, attach, detach."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated, Any

import typer

from ppec.cli import output
from ppec.cli.common import Run, command
from ppec.cli.output import Fmt, OutputOpt
from ppec.core.errors import BadInput
from ppec.core.units import format_size, parse_size
from ppec.operator import disks

app = typer.Typer(help="Data disks: list, attach (new or existing volume), detach.",
                  no_args_is_help=True)


class Bus(StrEnum):
    virtio = "virtio"
    scsi = "scsi"


COLUMNS = [("target", "TARGET"), ("bus", "BUS"), ("size", "SIZE"), ("kind", "KIND"),
           ("state", "STATE"), ("live", "LIVE"), ("persistent", "PERSISTENT"),
           ("volume", "VOLUME"), ("path", "PATH")]
HostOpt = Annotated[str | None, typer.Option(
    "--host", help="The host holding the VM (default: the one the store records).")]


def _human(disk: dict[str, Any]) -> dict[str, Any]:
    size = int(disk.get("size_bytes") or 0)
    return {**disk, "size": format_size(size) if size else "-"}


@app.command("list")
@command
def list_(run: Run, vm: Annotated[str, typer.Argument(help="The VM.")],
          host: HostOpt = None, fmt: OutputOpt = Fmt.table) -> None:
    """List a VM's disks: target, bus, size, state, whether live and in the saved config.

    KIND is root, seed (cloud-init), data (attached by ppec) or foreign (attached outside
    ppec). Detaches that were pending and have since completed are finished first."""
    doc = disks.list_(run.ctx, vm, host)
    if fmt is not Fmt.json:
        doc = {**doc, "disks": [_human(d) for d in doc["disks"]]}
    output.emit_list(fmt, doc, "disks", COLUMNS)
    if fmt is not Fmt.json:
        for note in doc.get("resolved", []):
            sys.stderr.write(f"ppec: {note}\n")


@app.command("attach")
@command
def attach(
    run: Run,
    vm: Annotated[str, typer.Argument(help="The VM.")],
    size: Annotated[str | None, typer.Option(
        help="Make a new volume of this size (e.g. 10G) in the host's storage dir.")] = None,
    path: Annotated[str | None, typer.Option(
        help="Attach this existing volume (in the host's storage dir, used by no domain).")]
        = None,
    bus: Annotated[Bus, typer.Option(help="Disk bus: virtio (vdX) or scsi (sdX).")]
        = Bus.virtio,
    host: HostOpt = None,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """Attach a disk live (when the VM runs) and to its saved config; the host's agent picks
    the target name (vdb, vdc, … or sda, …) under its lock."""
    if (size is None) == (path is None):
        raise BadInput("give --size (a new volume) or --path (an existing one)")
    doc = disks.attach(run.ctx, vm, size_bytes=parse_size(size, what="disk size")
                       if size else 0, path=path or "", bus=bus.value, host=host)
    output.emit_record(fmt, _human(doc) if fmt is not Fmt.json else doc,
                       [("target", "target"), ("bus", "bus"), ("size", "size"),
                        ("path", "path"), ("serial", "serial"), ("live", "live"),
                        ("persistent", "persistent")],
                       message=f"attached {doc['target']} to {vm} on {doc['host']}")


@app.command("detach")
@command
def detach(
    run: Run,
    vm: Annotated[str, typer.Argument(help="The VM.")],
    target: Annotated[str, typer.Argument(help="The disk's target, e.g. vdb.")],
    timeout: Annotated[int, typer.Option(
        help="Seconds to wait for the guest to release the disk.", min=1, max=300)] = 20,
    keep_volume: Annotated[bool, typer.Option(
        "--keep-volume", help="Keep the volume file (default: delete volumes ppec made; "
                              "volumes attached with --path are always kept).")] = False,
    host: HostOpt = None,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """Detach a disk: out of the saved config, then ask the guest to release it and wait for
    libvirt to confirm; only then is the volume deleted.

    A guest that does not release it in time leaves it "detach pending" with the volume
    kept (exit 1); run detach or `ppec disk list` again to finish. When policy says so,
    this creates a maker-checker request instead (exit 4)."""
    from ppec.operator import makerchecker  # signing and audit: only detach needs them
    run.hold_if("disk", "detach", lambda signer: makerchecker.request_disk_detach(
        run.ctx, signer, vm, target, keep_volume=keep_volume, timeout=timeout, host=host))
    doc = disks.detach(run.ctx, vm, target, timeout=timeout, keep_volume=keep_volume,
                       host=host)
    note = f"volume {doc['volume']}" + (f" ({doc['reason']})" if doc.get("reason") else "")
    output.emit_record(fmt, doc, message=f"detached {target} from {vm}; {note}")
