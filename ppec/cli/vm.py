"""``ppec vm``: VM lifecycle across the fleet."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from ppec import vms
from ppec.cli import output
from ppec.cli.common import context, partial_exit
from ppec.cli.output import Fmt, OutputOpt
from ppec.errors import BadInput
from ppec.units import MIB, format_size, parse_size

app = typer.Typer(help="Virtual machines: create, list, show, start, stop, delete.",
                  no_args_is_help=True)

COLUMNS = [("name", "NAME"), ("host", "HOST"), ("state", "STATE"), ("vcpus", "CPUS"),
           ("memory", "MEMORY"), ("disk", "DISK")]
FIELDS = [("name", "name"), ("host", "host"), ("state", "state"), ("vcpus", "vcpus"),
          ("memory", "memory"), ("disk", "disk"), ("disk_path", "disk path"),
          ("image", "image"), ("uuid", "uuid"), ("created_at", "created")]
class NumaPolicy(StrEnum):
    shared = "shared"
    dedicated = "dedicated"


class Threads(StrEnum):
    prefer = "prefer"
    isolate = "isolate"
    require = "require"


class Emulator(StrEnum):
    share = "share"
    isolate = "isolate"


HostOpt = Annotated[str | None, typer.Option(
    "--host", help="The host holding the VM (default: the one the store records).")]


def _human(vm: dict[str, Any]) -> dict[str, Any]:
    return {**vm, "memory": format_size(int(vm.get("memory_mib", 0)) * MIB),
            "disk": format_size(int(vm.get("disk_bytes", 0))) if vm.get("disk_bytes") else "-"}


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="VM name: lower-case letters, digits, '-'.")],
    cpus: Annotated[int | None, typer.Option(help="vCPUs.", min=1, max=1024)] = None,
    memory: Annotated[str | None, typer.Option(help="Memory, e.g. 512M, 4G.")] = None,
    disk: Annotated[str | None, typer.Option(help="Root disk size, e.g. 20G.")] = None,
    flavor: Annotated[str | None, typer.Option(
        help="A named shape from the config (tiny, small, medium, large, xlarge); "
             "--cpus/--memory/--disk override its parts.")] = None,
    image: Annotated[str, typer.Option(
        help="Base image path on the host; the root disk is a copy-on-write overlay.")] = "",
    host: Annotated[str | None, typer.Option(help="Build on this host.")] = None,
    region: Annotated[str, typer.Option(help="Only hosts in this region.")] = "",
    dry_run: Annotated[bool, typer.Option(help="Choose the host, build nothing.")] = False,
    numa: Annotated[NumaPolicy, typer.Option(
        help="dedicated: vCPUs pinned to host CPUs of their own, memory bound to their NUMA "
             "node(s); shared: vCPUs float over the CPUs no dedicated VM holds.")]
        = NumaPolicy.shared,
    numa_nodes: Annotated[int, typer.Option(
        help="Spread over exactly N NUMA nodes (dedicated); default: one node when it fits, "
             "else the fewest.", min=0, max=64)] = 0,
    threads: Annotated[Threads, typer.Option(
        help="SMT siblings (dedicated): prefer packs vCPUs on sibling threads; isolate gives "
             "each vCPU a whole core; require uses whole sibling sets only.")]
        = Threads.prefer,
    emulator: Annotated[Emulator, typer.Option(
        help="QEMU's own threads (dedicated): share the VM's CPUs, or isolate on one more "
             "CPU.")] = Emulator.share,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """Create and start a VM: choose a host (least loaded that fits), build it there."""
    output.use(fmt)
    with context() as ctx:
        if flavor is None and (cpus is None or memory is None or disk is None):
            raise BadInput("give --flavor, or all of --cpus, --memory and --disk")
        base = ctx.config.flavor(flavor) if flavor else None
        doc = vms.create(
            ctx, name,
            vcpus=cpus if cpus is not None else base.cpus,  # type: ignore[union-attr]
            memory_mib=parse_size(memory, what="memory") // MIB if memory
            else base.memory_mib,  # type: ignore[union-attr]
            disk_bytes=parse_size(disk, what="disk size") if disk
            else base.disk_bytes,  # type: ignore[union-attr]
            image=image, host=host, region=region, dry_run=dry_run,
            numa=vms.NumaOptions(numa.value, numa_nodes, threads.value, emulator.value))
    if dry_run:
        output.emit_record(fmt, doc, [("host", "host"), ("ranked", "candidates")],
                           message=f"{name} would be created on {doc['host']}")
    else:
        output.emit_record(fmt, _human(doc), FIELDS,
                           message=f"created {name} on {doc['host']}")


@app.command("list")
def list_(
    host: Annotated[str | None, typer.Option(help="Only this host.")] = None,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """List VMs on every host (asked live from each agent, in parallel)."""
    output.use(fmt)
    with context() as ctx:
        found, failed = vms.list_all(ctx, host)
        total = len([host] if host else ctx.store.hosts())
    doc = {"vms": [_human(v) for v in found] if fmt is not Fmt.json else found,
           "errors": output.host_errors(failed)}
    output.emit_list(fmt, doc, "vms", COLUMNS)
    partial_exit(len(failed), total)


@app.command("show")
def show(name: str, host: HostOpt = None,
         xml: Annotated[bool, typer.Option("--xml", help="Print the live domain XML.")]
         = False, fmt: OutputOpt = Fmt.table) -> None:
    """Show one VM as its host's agent sees it now."""
    output.use(fmt)
    with context() as ctx:
        if xml:
            doc = vms.xml(ctx, name, host)
            if fmt is Fmt.json:
                output.emit_json(doc)
            else:
                typer.echo(doc["xml"])
            return
        doc = vms.show(ctx, name, host)
    output.emit_record(fmt, _human(doc) if fmt is Fmt.table else doc, FIELDS)


@app.command("start")
def start(name: str, host: HostOpt = None, fmt: OutputOpt = Fmt.table) -> None:
    """Start a stopped VM."""
    output.use(fmt)
    with context() as ctx:
        doc = vms.start(ctx, name, host)
    output.emit_record(fmt, doc, message=f"{name}: {doc['state']}")


@app.command("stop")
def stop(
    name: str,
    force: Annotated[bool, typer.Option(help="Power off at once (like pulling the plug).")]
        = False,
    timeout: Annotated[int, typer.Option(help="Seconds to wait for a graceful shutdown.",
                                         min=1, max=3600)] = 60,
    host: HostOpt = None,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """Stop a VM: ACPI shutdown and wait, or --force to power off."""
    output.use(fmt)
    with context() as ctx:
        doc = vms.stop(ctx, name, force=force, timeout=timeout, host=host)
    output.emit_record(fmt, doc, message=f"{name}: {doc['state']}")


@app.command("delete")
def delete(name: str, host: HostOpt = None, fmt: OutputOpt = Fmt.table) -> None:
    """Delete a VM: power off, undefine, remove its disk and its ledger entry."""
    output.use(fmt)
    with context() as ctx:
        doc = vms.delete(ctx, name, host)
    output.emit_record(fmt, doc, message=doc.get("note") or f"deleted {name} from {doc['host']}")
