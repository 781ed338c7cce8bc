"""``ppec image``: the base image catalogue, and pushing images to hosts."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ppec.cli import output
from ppec.cli.common import OutputOpt, Run, command, partial_exit
from ppec.cli.output import Fmt
from ppec.core.errors import BadInput
from ppec.core.units import format_size

app = typer.Typer(help="Base images by SHA-256: add, list, show, remove, push to hosts.",
                  no_args_is_help=True)

COLUMNS = [("name", "NAME"), ("short", "DIGEST"), ("kind", "KIND"), ("format", "FORMAT"),
           ("virtual", "VIRTUAL"), ("file", "FILE"), ("hosts_text", "HOSTS"),
           ("vms_text", "VMS")]


def _human(v: dict[str, Any]) -> dict[str, Any]:
    return {**v, "short": v["digest"][:12], "virtual": format_size(v["virtual_bytes"]),
            "file": format_size(v["file_bytes"]), "hosts_text": ",".join(v["hosts"]) or "-",
            "vms_text": ",".join(v["vms"]) or "-"}


@app.command("add")
@command
def add(run: Run, name: str,
        file: Annotated[Path, typer.Argument(help="The image file on this machine.")],
        kind: Annotated[str, typer.Option(help="disk (qcow2 or raw), kernel or initrd.")]
        = "disk",
        os_user: Annotated[str, typer.Option(help="The guest's default user (e.g. debian).")]
        = "",
        description: Annotated[str, typer.Option(help="Free text.")] = "",
        fmt: OutputOpt = Fmt.table) -> None:
    """Register FILE under NAME by its SHA-256 (a new version when NAME exists)."""
    from ppec.operator import images
    image = images.add(run.ctx.store, name, file, kind=kind, os_user=os_user,
                       description=description)
    output.emit_record(fmt, images.views(run.ctx.store, [image])[0],
                       message=f"added {name} version {image.digest[:12]} "
                               f"({image.format}, {format_size(image.virtual_bytes)})")


@app.command("list")
@command
def list_(run: Run, fmt: OutputOpt = Fmt.table) -> None:
    """Every version of every image: digest, sizes, the hosts holding it, VMs using it."""
    from ppec.operator import images
    rows = images.views(run.ctx.store, images.versions(run.ctx.store))
    output.emit_list(fmt, {"images": rows if fmt is Fmt.json else [_human(r) for r in rows]},
                     "images", COLUMNS)


@app.command("show")
@command
def show(run: Run, name: str, fmt: OutputOpt = Fmt.table) -> None:
    """One image's versions, newest first."""
    from ppec.operator import images
    rows = images.views(run.ctx.store, images.versions(run.ctx.store, name))
    if not rows:
        images.resolve(run.ctx.store, name)   # the NOT_FOUND error
    output.emit_list(fmt, {"name": name, "images": rows if fmt is Fmt.json
                           else [_human(r) for r in rows]}, "images", COLUMNS)


@app.command("remove")
@command
def remove(run: Run, name: str,
           version: Annotated[str, typer.Option(help="Only this version (8+ digits).")] = "",
           host: Annotated[str | None, typer.Option(
               help="Remove it from this host only (the host refuses while a VM's disk is "
                    "backed by it); the catalogue keeps it.")] = None,
           fmt: OutputOpt = Fmt.table) -> None:
    """Drop an image (or one version) from the catalogue, or from one host; refused while
    a VM uses it, naming the VMs."""
    from ppec.operator import images
    if host:
        removed = images.remove_from_host(run.ctx, name, version, host)
        output.emit_record(fmt, {"name": name, "host": host, "removed": removed},
                           message=f"removed {len(removed)} version(s) of {name} from {host}")
        return
    removed = images.remove(run.ctx.store, name, version)
    output.emit_record(fmt, {"name": name, "removed": removed},
                       message=f"removed {len(removed)} version(s) of {name}")


@app.command("push")
@command
def push(run: Run, ref: Annotated[str, typer.Argument(metavar="NAME[@DIGEST]")],
         hosts: Annotated[list[str] | None, typer.Argument(help="Hosts (default: --all).")]
         = None,
         all_hosts: Annotated[bool, typer.Option("--all", help="Every host.")] = False,
         max_parallel: Annotated[int, typer.Option(min=1, max=256,
                                                   help="Hosts at once.")] = 4,
         fmt: OutputOpt = Fmt.table) -> None:
    """Stream an image to hosts over the agent's channel (resumes a broken transfer from
    the host's offset; the host keeps it only when its SHA-256 matches). Exit 5 when some
    hosts failed."""
    from ppec.operator import imagepush, images
    from ppec.operator.fleet.client import fan_out
    ctx = run.ctx
    if bool(hosts) == all_hosts:
        raise BadInput("name hosts, or give --all")
    targets = ctx.store.hosts() if all_hosts else [ctx.store.host(h) for h in hosts or ()]
    image = images.resolve(ctx.store, ref, kind=None)
    meter = _Meter(fmt is Fmt.table and sys.stderr.isatty())
    results = fan_out(targets, lambda h: imagepush.push(ctx, h, image, meter.update),
                      max_workers=max_parallel,
                      on_result=lambda r: _line(run, fmt, r, meter))
    meter.done()
    failed = [r for r in results if not r.ok]
    if fmt is not Fmt.json:
        for r in results:
            if r.ok:
                v = r.value
                output.emit_line(f"{v['host']}: {v['state']} {image.name} "
                                 f"{image.digest[:12]} ({_rate(v)})")
            else:
                output.emit_line(f"{r.host}: failed: {r.error}")
    partial_exit(len(failed), len(results))


def _rate(v: dict[str, Any]) -> str:
    if not v["sent"]:
        return "already there"
    mib_s = v["sent"] / max(v["seconds"], 1e-6) / (1 << 20)
    return f"{format_size(v['sent'])} in {v['seconds']:.1f} s, {mib_s:.0f} MiB/s"


def _line(run: Run, fmt: Fmt, r: Any, meter: _Meter) -> None:
    """Each host as it finishes (in this thread: the store's): recorded in the catalogue,
    and with -o json one JSON line."""
    if r.ok:
        from ppec.operator import images
        images.record_host(run.ctx.store, r.value["digest"], r.value["host"])
    if fmt is Fmt.json:
        meter.clear()
        doc = r.value if r.ok else {"host": r.host, "state": "failed",
                                    "error": {"code": r.error.code, "message": str(r.error)}}
        output.emit_json_line(doc)


class _Meter:
    """Bytes and bytes per second per host, redrawn on one stderr line (a terminal only)."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.lock = threading.Lock()
        self.hosts: dict[str, tuple[int, int, float]] = {}
        self.last = 0.0

    def update(self, host: str, done: int, total: int) -> None:
        if not self.live:
            return
        with self.lock:
            start = self.hosts.get(host, (0, 0, time.monotonic()))[2]
            self.hosts[host] = (done, total, start)
            now = time.monotonic()
            if now - self.last < 0.2 and done < total:
                return
            self.last = now
            parts = [f"{h} {d * 100 // max(t, 1)}% "
                     f"{d / max(now - s, 1e-6) / (1 << 20):.0f} MiB/s"
                     for h, (d, t, s) in sorted(self.hosts.items())]
            sys.stderr.write("\r\033[K" + "  ".join(parts)[:200])
            sys.stderr.flush()

    def clear(self) -> None:
        if self.live:
            sys.stderr.write("\r\033[K")

    def done(self) -> None:
        self.clear()
