"""``ppec vm``: VM lifecycle across the fleet."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ppec.cli import options as opt
from ppec.cli import output, vm_verbs
from ppec.cli.common import CursorOpt, LimitOpt, OutputOpt, Run, command, partial_exit
from ppec.cli.output import Fmt
from ppec.core.errors import BadInput
from ppec.operator import lifecycle, vms
from ppec.wire.vmspec import KernelBoot

app = typer.Typer(
    help="Virtual machines: create, list, show, start, stop, delete, migrate, stats, logs, "
         "console.",
    no_args_is_help=True)

COLUMNS = [("name", "NAME"), ("host", "HOST"), ("state", "STATE"), ("vcpus", "CPUS"),
           ("memory", "MEMORY"), ("disk", "DISK"), ("address", "ADDRESS")]
HostOpt = Annotated[str | None, typer.Option(
    "--host", help="The host holding the VM (default: the one the store records).")]


@app.command("create")
@command
def create(
    run: Run,
    name: Annotated[str, typer.Argument(help="VM name: lower-case letters, digits, '-'.")],
    cpus: opt.Cpus = None,
    memory: opt.Memory = None,
    disk: opt.Disk = None,
    flavor: opt.Flavor = None,
    image: opt.Image = "",
    host: Annotated[str | None, typer.Option(help="Build on this host.")] = None,
    kernel: opt.Kernel = "",
    initrd: opt.Initrd = "",
    cmdline: Annotated[str, typer.Option(help="Kernel command line for --kernel.")] = "",
    region: opt.Region = "",
    vrf: opt.Vrf = "",
    nic: opt.Nics = None,
    ssh_key: opt.SshKeys = None,
    user_data: opt.UserData = None,
    tag: opt.Tag = None,
    ha_group: opt.HaGroup = "",
    spread: opt.SpreadOpt = opt.Spread.host,
    numa: opt.Numa = opt.NumaPolicy.shared,
    numa_nodes: opt.NumaNodes = 0,
    threads: opt.ThreadsOpt = opt.Threads.prefer,
    emulator: opt.EmulatorOpt = opt.Emulator.share,
    hugepages: opt.HugepagesOpt = "",
    dry_run: Annotated[bool, typer.Option(help="Choose the host, build nothing.")] = False,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """Create and start a VM: place it (filters, weights: see `ppec place --explain`),
    then build it on the best host; the host re-checks under its lock."""
    ask = opt.make_ask(run.ctx.config, flavor, cpus, memory, disk, numa=numa,
                       numa_nodes=numa_nodes, threads=threads, emulator=emulator,
                       region=region, vrf=vrf, tag=tag, ha_group=ha_group, spread=spread,
                       hugepages=hugepages)
    if (initrd or cmdline) and not kernel:
        raise BadInput("--initrd and --cmdline go with --kernel")
    boot = KernelBoot(kernel, initrd, cmdline) if kernel else None
    doc = vms.create(run.ctx, name, ask, image=image, host=host, dry_run=dry_run, boot=boot,
                     guest=opt.guest_ask(nic, ssh_key, user_data))
    if dry_run:
        output.emit_record(fmt, doc, [("host", "host"), ("ranked", "candidates")],
                           message=f"{name} would be created on {doc['host']}")
    else:
        output.emit_record(fmt, vm_verbs.human(doc) if fmt is not Fmt.json else doc,
                           vm_verbs.FIELDS, message=f"created {name} on {doc['host']}")


@app.command("list")
@command
def list_(
    run: Run,
    host: Annotated[str | None, typer.Option(help="Only this host.")] = None,
    state: Annotated[str, typer.Option(help="Only VMs in this state (running, "
                                            "shut-off, ...).")] = "",
    limit: LimitOpt = None,
    cursor: CursorOpt = None,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """List VMs. Without --limit/--cursor: asked live from every agent, in parallel (exit 5
    if some hosts did not answer). With --limit or --cursor: from the store, a page at a
    time by name, as ppec last recorded them (its own create/start/stop); no agent asked."""
    if limit is not None or cursor is not None:
        from ppec.operator import listing  # the store's pages (and snapshots) only here
        doc = listing.vms(run.ctx, limit=limit, cursor=cursor, host=host or "", state=state)
        if fmt is not Fmt.json:
            doc = {**doc, "vms": [vm_verbs.human(v) for v in doc["vms"]]}
        output.emit_page(fmt, doc, "vms", COLUMNS, "ppec vm list", host=host, state=state,
                         limit=limit)
        return
    found, failed = lifecycle.list_all(run.ctx, host)
    found = [v for v in found if not state or v.get("state") == state]
    total = len([host] if host else run.ctx.store.hosts())
    doc = {"vms": [vm_verbs.human(v) for v in found] if fmt is not Fmt.json else found,
           "errors": output.host_errors(failed), "source": "live", "next_cursor": None}
    output.emit_list(fmt, doc, "vms", COLUMNS)
    partial_exit(len(failed), total)


@app.command("show")
@command
def show(run: Run, name: str, host: HostOpt = None,
         xml: Annotated[bool, typer.Option("--xml", help="Print the live domain XML.")]
         = False,
         tuning: Annotated[bool, typer.Option(
             "--tuning", help="Also what the host applied, read back from the live XML and "
             "the QEMU process's /proc: each thread's CPUs (vCPUs, emulator, I/O thread, "
             "vhost), the guest RAM's backing and NUMA nodes, the disks' cache and I/O "
             "mode (-o json: `tuning`).")] = False,
         fmt: OutputOpt = Fmt.table) -> None:
    """Show one VM as its host's agent sees it now."""
    vm_verbs.show(run, name, host=host, xml=xml, fmt=fmt, tuning=tuning)


@app.command("start")
@command
def start(run: Run, name: str, host: HostOpt = None, fmt: OutputOpt = Fmt.table) -> None:
    """Start a stopped VM."""
    vm_verbs.start(run, name, host=host, fmt=fmt)


@app.command("stop")
@command
def stop(
    run: Run,
    name: str,
    force: Annotated[bool, typer.Option(help="Power off at once (like pulling the plug).")]
        = False,
    timeout: Annotated[int, typer.Option(help="Seconds to wait for a graceful shutdown.",
                                         min=1, max=3600)] = 60,
    host: HostOpt = None,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """Stop a VM: ACPI shutdown and wait, or --force to power off."""
    vm_verbs.stop(run, name, force=force, timeout=timeout, host=host, fmt=fmt)


@app.command("delete")
@command
def delete(run: Run, name: str, host: HostOpt = None, fmt: OutputOpt = Fmt.table) -> None:
    """Delete a VM: power off, undefine, remove its disk and its ledger entry.

    When policy says so, this creates a maker-checker request instead (exit 4)."""
    run.hold_if("vm", "delete",
                lambda signer: _request_delete(run, signer, name, host))
    doc = lifecycle.delete(run.ctx, name, host)
    output.emit_record(fmt, doc, message=doc.get("note") or f"deleted {name} from {doc['host']}")


def _request_delete(run: Run, signer: Any, name: str, host: str | None) -> dict[str, Any]:
    from ppec.operator import makerchecker  # signing and audit: only when policy holds it
    return makerchecker.request_vm_delete(run.ctx, signer, name, host)


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

    -o json: {name, from, host, cpus, source_state, and libvirt's figures: total_ms,
    downtime_ms, bytes, memory_passes}."""
    from ppec.cli.migrate import run_migrate  # its meter and request: this command only
    from ppec.operator.migrate import MoveAsk
    run_migrate(run, MoveAsk(name, to=to or "", max_downtime_ms=max_downtime,
                             bandwidth_mib=bandwidth, timeout=timeout), fmt)


@app.command("logs")
@command
def logs(
    run: Run,
    name: str,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep printing what the console writes, until Ctrl-C.")]
        = False,
    lines: Annotated[int, typer.Option(
        "--lines", "-n", min=0, max=100_000,
        help="Start with the last N lines (0: the whole log).")] = 50,
    host: HostOpt = None,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """The VM's serial console log, as its host recorded it (boot messages included).

    With -o json: one document {text, cursor, more, truncated, reset, ...}; with --follow,
    one such document per line, each a new piece of the log."""
    from ppec.cli import console  # the console modules load only for these commands
    console.logs(run, name, lines=lines, follow=follow, host=host, fmt=fmt)


@app.command("console")
@command
def console_(
    run: Run,
    name: str,
    force: Annotated[bool, typer.Option(
        help="Take the console over from whoever holds it (they are told).")] = False,
    host: HostOpt = None,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """An interactive serial console (leave with Ctrl-]). One session per VM at a time.

    When policy says so (`[approval.vm] operations = ["console"]`), the first call makes a
    request (exit 4); once a checker approves it, the same command opens the console,
    once."""
    from ppec.cli import console
    console.open_session(run, name, force=force, host=host)


@app.command("stats")
@command
def stats(
    run: Run,
    names: Annotated[list[str], typer.Argument(help="One or more VM names.")],
    host: HostOpt = None,
    interval: Annotated[float, typer.Option(
        help="Seconds between the two samples a rate needs.", min=0.2)] = 1.0,
    watch: Annotated[float | None, typer.Option(
        help="Refresh every S seconds (a table in place on a terminal; one JSON line per "
             "sample with -o json) until Ctrl-C or --count.", min=0.2)] = None,
    count: Annotated[int | None, typer.Option(help="With --watch: stop after N samples.",
                                              min=1)] = None,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """CPU (percent of one vCPU, and of all its vCPUs), steal, memory (actual, RSS,
    balloon), block and network rates of VMs, from libvirt's counters sampled twice.

    -o json: {"vms": [{name, host, state, vcpus, interval_s, cpu_percent (100 = one
    vCPU busy), cpu_percent_of_vcpus (100 = all busy), vcpu_percent, steal_percent,
    memory_mib, max_memory_mib, rss_mib, balloon, block_read_bps, block_write_bps,
    block_read_iops, block_write_iops, net_rx_bps, net_tx_bps, block_read_bytes,
    block_write_bytes, block: [...], net: [...]}], "errors": [...], "taken_at": T};
    a figure libvirt does not give is null. Definitions: docs/vmstats.md."""
    from ppec.cli import vmstats as view
    from ppec.operator import vmstats
    targets = vmstats.vm_targets(run.ctx, names, host)
    view.show(run, targets, watch or interval, count if watch else 1, live=bool(watch),
              title="ppec vm stats")
