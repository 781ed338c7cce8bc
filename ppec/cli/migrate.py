"""``ppec vm migrate``: move a running VM to another host, live."""

from __future__ import annotations

import sys
import threading
from typing import Annotated, Any

import typer

from ppec.cli import output
from ppec.cli.common import OutputOpt, Run, command
from ppec.cli.output import Fmt
from ppec.cli.vm import app
from ppec.core.units import format_size


@app.command("migrate")
@command
def migrate(
    run: Run,
    name: str,
    to: Annotated[str | None, typer.Option(
        "--to", help="The host to move to (default: placement chooses, as for a create: "
                     "HA group, NUMA fit, the VRF's network, the image).")] = None,
    max_downtime: Annotated[int, typer.Option(
        "--max-downtime", metavar="MS", min=0, max=600_000,
        help="Longest pause of the guest at the switch-over, in ms (0: libvirt's "
             "default, 300).")] = 0,
    bandwidth: Annotated[int, typer.Option(
        metavar="MIB_S", min=0, max=1 << 20,
        help="MiB per second the copy may use (0: no limit), to spare a busy link.")] = 0,
    timeout: Annotated[int, typer.Option(
        help="Abort when the migration takes longer (seconds); the VM keeps running "
             "where it was.", min=1, max=86_400)] = 600,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """Move a running VM to another host, live: its memory and its overlay are copied
    libvirt to libvirt (the base image is on both hosts), its CPU pins are computed anew
    on the target, its MAC and addresses stay. Ctrl-C aborts: the VM stays where it was.

    A run that was cut (CLI killed, link lost) is finished by running the command again.
    When policy says so (`[approval.vm] operations = ["migrate"]`), this creates a
    maker-checker request instead (exit 4).

    -o json: {name, from, host, cpus, source_state}."""
    from ppec.operator import migrate as mover
    ask = mover.MoveAsk(name, to=to or "", max_downtime_ms=max_downtime,
                        bandwidth_mib=bandwidth, timeout=timeout)
    run.hold_if("vm", "migrate", lambda signer: _request(run, signer, ask))
    meter = _Meter(fmt is Fmt.table and sys.stderr.isatty())
    try:
        doc = mover.migrate(run.ctx, ask, progress=meter.update)
    finally:
        meter.clear()
    output.emit_record(fmt, doc, message=f"{name}: moved from {doc.get('from')} to "
                                         f"{doc['host']}")


def _request(run: Run, signer: Any, ask: Any) -> dict[str, Any]:
    from ppec.operator import makerchecker
    return makerchecker.request_vm_migrate(run.ctx, signer, ask)


class _Meter:
    """Memory and disk left, and the pass over memory, on one stderr line (a terminal)."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.lock = threading.Lock()

    def update(self, doc: dict[str, Any]) -> None:
        job = doc.get("job") or {}
        if not self.live or not job:
            return
        text = (f"{doc.get('name')}: memory {format_size(job.get('memory_remaining', 0))} "
                f"left of {format_size(job.get('memory_total', 0))}, disk "
                f"{format_size(job.get('disk_remaining', 0))} left of "
                f"{format_size(job.get('disk_total', 0))}, pass "
                f"{job.get('memory_iteration', 0)}")
        with self.lock:
            sys.stderr.write("\r\033[K" + text[:200])
            sys.stderr.flush()

    def clear(self) -> None:
        if self.live:
            sys.stderr.write("\r\033[K")
