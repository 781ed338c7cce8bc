"""``ppec disk``: data disks of a running (or stopped) VM: list, attach, detach.

The verbs' work is in ``ppec.cli.disk_verbs`` (shared with ``ppec.cli.quick``); here are
their options and help."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from ppec.cli import disk_verbs
from ppec.cli.common import OutputOpt, Run, command
from ppec.cli.output import Fmt

app = typer.Typer(help="Data disks: list, attach (new or existing volume), detach.",
                  no_args_is_help=True)


class Bus(StrEnum):
    virtio = "virtio"
    scsi = "scsi"


HostOpt = Annotated[str | None, typer.Option(
    "--host", help="The host holding the VM (default: the one the store records).")]


@app.command("list")
@command
def list_(run: Run, vm: Annotated[str, typer.Argument(help="The VM.")],
          host: HostOpt = None, fmt: OutputOpt = Fmt.table) -> None:
    """List a VM's disks: target, bus, size, state, whether live and in the saved config.

    KIND is root, seed (cloud-init), data (attached by ppec) or foreign (attached outside
    ppec). Detaches that were pending and have since completed are finished first."""
    disk_verbs.list_(run, vm, host=host, fmt=fmt)


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
    disk_verbs.attach(run, vm, size=size, path=path, bus=bus.value, host=host, fmt=fmt)


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
    disk_verbs.detach(run, vm, target, timeout=timeout, keep_volume=keep_volume, host=host,
                      fmt=fmt)
