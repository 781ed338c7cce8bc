"""``ppec host``: the inventory of bare-metal hosts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ppec.cli import host_verbs as hi
from ppec.cli import output
from ppec.cli.common import CursorOpt, LimitOpt, OutputOpt, Run, command, partial_exit
from ppec.cli.output import Fmt
from ppec.core.errors import BadInput
from ppec.core.paths import AGENT_SOCKET
from ppec.core.units import MIB, format_size
from ppec.operator import hosts, listing, snapshots
from ppec.operator.store import Host

app = typer.Typer(help="Bare-metal hosts: add, list, show, remove, drain, evacuate, restore, top.",
                  no_args_is_help=True)

COLUMNS = [("name", "HOST"), ("address", "ADDRESS"), ("region", "REGION"), ("rack", "RACK"),
           ("vrf", "VRF"), ("drained", "DRAINED"), ("state", "SNAPSHOT"), ("age_s", "AGE s"),
           ("vms", "VMS"), ("cpu_percent", "CPU%")]


def _disk_text(t: dict[str, str] | None) -> str:
    """The VMs' disk I/O here: cache, io, discard and why (O_DIRECT probed at start)."""
    if not t:
        return "-"
    return f"cache={t['cache']} io={t['io']} discard={t['discard']} ({t['why']})"


@app.command("add")
@command
def add(
    run: Run,
    name: Annotated[str, typer.Argument(help="Inventory name, e.g. bm-01.")],
    address: Annotated[str, typer.Option(
        help="Hostname or IP of the host's sshd, or `local` for this machine's agent.")],
    port: Annotated[int, typer.Option(help="sshd port.")] = 22,
    user: Annotated[str, typer.Option(help="SSH user (its key runs only the forced "
                                           "command `ppec-agent proxy`).")] = "root",
    identity: Annotated[str, typer.Option(help="Private key file; default: ssh-agent and "
                                               "~/.ssh keys.")] = "",
    socket: Annotated[str, typer.Option(help="Agent socket, for a `local` host.")]
        = AGENT_SOCKET,
    region: Annotated[str, typer.Option()] = "",
    rack: Annotated[str, typer.Option()] = "",
    power_domain: Annotated[str, typer.Option()] = "",
    vrf: Annotated[str, typer.Option()] = "",
    cost: Annotated[float, typer.Option(help="Cost per hour.")] = 0.0,
    power_idle: Annotated[float, typer.Option(help="Watts drawn idle (placement avoids "
                                                   "waking idle hosts).")] = 0.0,
    power_max: Annotated[float, typer.Option(help="Watts drawn at full load.")] = 0.0,
    tag: Annotated[list[str] | None, typer.Option(help="Repeatable.")] = None,
    accept_new_host_key: Annotated[bool, typer.Option(
        help="Record the host's SSH key if none is known yet (never replaces a known "
             "key).")] = False,
    check: Annotated[bool, typer.Option(help="Ping the agent before adding.")] = True,
    install: Annotated[bool, typer.Option(
        "--install", help="Set the host up first over one root SSH login with "
        "--bootstrap-identity: Debian packages, this ppec in /opt/ppec, the agent config "
        "and service, one forced-command line for --identity's key; then prove the agent "
        "answers through it. Safe to run again: it finishes a half-done install and "
        "changes nothing on a finished one.")] = False,
    bootstrap_identity: hi.BootstrapIdentityOpt = "",
    agent_config: hi.AgentConfigOpt = "",
    network: hi.NetworkOpt = None,
    reserved_cpus: hi.ReservedCpusOpt = "",
    host_key_fingerprint: hi.FingerprintOpt = "",
    force_os: hi.ForceOsOpt = False,
    install_root: hi.InstallRootOpt = "",
    dry_run: hi.InstallDryRunOpt = False,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """Add a host to the inventory, after checking its SSH host key and agent (with
    --install: after installing the agent on it)."""
    host = Host(name=name, address=address, port=port, username=user, identity=identity,
                socket=socket, region=region, rack=rack, power_domain=power_domain, vrf=vrf,
                cost=cost, tags=tuple(tag or ()), power_idle_w=power_idle,
                power_max_w=power_max)
    if install:
        hi.install(run, host, hi.options(bootstrap_identity, install_root, agent_config,
                                         network, reserved_cpus, accept_new_host_key,
                                         host_key_fingerprint, force_os), dry_run, fmt)
        return
    if bootstrap_identity or agent_config or network or reserved_cpus or dry_run or \
            host_key_fingerprint or force_os or install_root:
        raise BadInput("--bootstrap-identity, --agent-config, --network, --reserved-cpus, "
                       "--host-key-fingerprint, --force-os, --install-root and --dry-run "
                       "go with --install")
    doc = hosts.add(run.ctx, host, accept_new_host_key=accept_new_host_key, check=check)
    output.emit_record(fmt, doc, message=f"added host {name} ({address})")


@app.command("list")
@command
def list_(run: Run,
          region: Annotated[str, typer.Option(help="Only hosts in this region.")] = "",
          rack: Annotated[str, typer.Option(help="Only hosts in this rack.")] = "",
          limit: LimitOpt = None, cursor: CursorOpt = None,
          fmt: OutputOpt = Fmt.table) -> None:
    """List hosts in the inventory, by name, with their stored snapshot's age (no agent is
    asked). --limit/--cursor page through it in the store, a page at a time."""
    doc = listing.hosts(run.ctx, limit=limit, cursor=cursor, region=region, rack=rack)
    output.emit_page(fmt, doc, "hosts", COLUMNS, "ppec host list", region=region, rack=rack,
                     limit=limit)


NUMA_COLUMNS = [("node", "NODE"), ("cpus", "CPUS"), ("reserved", "RESERVED"),
                ("dedicated", "DEDICATED"), ("free", "FREE"), ("free_cpus", "FREE CPUS"),
                ("memory", "MEMORY"), ("free_memory", "FREE MEMORY"),
                ("hugepages_text", "HUGEPAGES FREE/TOTAL"), ("vms", "VMS")]


def network_text(n: dict[str, Any]) -> str:
    """``blue: bridge br-blue up, mtu 1500`` (or ``MISSING``): one host network."""
    state = ("up" if n.get("up") else "down") if n.get("present") else "MISSING"
    mtu = n.get("mtu") or n.get("device_mtu")
    return f"{n['name']}: {n['kind']} {n['source']} {state}" + (f", mtu {mtu}" if mtu else "")


@app.command("show")
@command
def show(run: Run, name: str,
         numa: Annotated[bool, typer.Option(
             "--numa", help="Per NUMA node: CPUs total, reserved, dedicated, free; memory; "
                            "huge pages reserved and free per size; the VMs on it.")]
         = False,
         fmt: OutputOpt = Fmt.table) -> None:
    """Show a host: inventory record and what its agent reports now."""
    if numa:
        ctx = run.ctx
        doc = hosts.numa(ctx, name)
        rows = [{**n, "memory": format_size(n["memory_mib"] * MIB),
                 "free_memory": format_size(max(n["free_mib"], 0) * MIB) if n["free_mib"]
                 else "0",
                 "hugepages_text": ", ".join(
                     f"{format_size(h['size_kib'] * 1024)} {h['free']}/{h['total']}"
                     for h in n.get("hugepages", []) if h["total"]) or "-"}
                for n in doc["nodes"]]
        output.emit_list(fmt, {**doc, "nodes": doc["nodes"] if fmt is Fmt.json else rows},
                         "nodes", NUMA_COLUMNS)
        if fmt is Fmt.table:
            sh = doc["shared"]
            typer.echo(f"shared: {sh['vcpus']} vCPUs of {len(sh['vms'])} VMs on {sh['cpus']} "
                       f"CPUs (overcommit {sh['overcommit']:g})")
        return
    doc = hosts.show(run.ctx, name)
    fields = [(k, k) for k in ("name", "address", "port", "region", "rack", "power_domain",
                               "vrf", "drained", "reachable", "vms_in_store")]
    if fmt is Fmt.table and doc.get("live"):
        doc = {**doc, **{f"live.{k}": v for k, v in doc["live"].items()},
               "live.networks": "; ".join(network_text(n) for n in
                                          doc["live"].get("networks", [])) or "-",
               "live.images": ", ".join(f"{i['digest'][:12]} ({format_size(i['size'])})"
                                        for i in doc["live"].get("images", [])) or "-",
               "live.disks": _disk_text(doc["live"].get("disk_tuning"))}
        fields += [(f"live.{k}", k) for k in ("domain_type", "cpu_mode", "cpu_model", "cpus",
                                               "memory_mib", "committed_memory_mib",
                                               "vm_count", "networks", "images", "disks",
                                               "libvirt_version",
                                               "agent_version")]
    elif fmt is Fmt.table and doc.get("error"):
        doc = {**doc, "error": doc["error"]["message"]}
        fields.append(("error", "error"))
    output.emit_record(fmt, doc, fields)


@app.command("remove")
@command
def remove(run: Run, name: str,
           uninstall: Annotated[bool, typer.Option(
               "--uninstall", help="Also stop and remove the agent, its files and its "
               "forced-command line on the host (other authorized_keys lines untouched; "
               "the state dir with disks and images stays), over a root login with "
               "--bootstrap-identity. Refused while the host has VMs.")] = False,
           bootstrap_identity: hi.BootstrapIdentityOpt = "",
           install_root: hi.InstallRootOpt = "",
           fmt: OutputOpt = Fmt.table) -> None:
    """Remove a host from the inventory (refused while the store has VMs on it)."""
    if uninstall:
        hi.uninstall(run, name, hi.options(bootstrap_identity, install_root), fmt)
        return
    run.ctx.store.remove_host(name)
    output.emit_record(fmt, {"name": name, "removed": True}, message=f"removed host {name}")


def _drain(run: Run, name: str, drained: bool, fmt: Fmt) -> None:
    host = run.ctx.store.set_drained(name, drained)
    output.emit_record(fmt, host.as_dict(),
                       message=f"host {name} {'drained' if drained else 'undrained'}")


@app.command("drain")
@command
def drain(run: Run, name: str, fmt: OutputOpt = Fmt.table) -> None:
    """Stop placing new VMs on a host (running VMs stay)."""
    _drain(run, name, True, fmt)


@app.command("undrain")
@command
def undrain(run: Run, name: str, fmt: OutputOpt = Fmt.table) -> None:
    """Place new VMs on a host again."""
    _drain(run, name, False, fmt)


@app.command("evacuate")
@command
def evacuate(run: Run, name: str,
             max_parallel: Annotated[int, typer.Option(
                 min=1, max=64, help="Migrations at once.")] = 1,
             dry_run: Annotated[bool, typer.Option(
                 "--dry-run", help="Print the plan only (the host is not drained).")]
             = False,
             timeout: Annotated[int, typer.Option(
                 min=1, max=86_400, help="Seconds each migration may take.")] = 600,
             fmt: OutputOpt = Fmt.table) -> None:
    """Empty a host for maintenance: drain it, plan a target for every VM (placement's
    rules, HA groups included, holding across the whole plan), migrate them live.

    One line per VM as it ends (with -o json, one JSON document at the end: {host,
    moves, results: [{name, state: moved|failed|unplaced|planned, host, error}]}). Exit 5
    when some VM could not be moved (named, with its reason); the others still move."""
    from ppec.operator import evacuate as evac
    done = evac.evacuate(run.ctx, name, max_parallel=max_parallel, dry_run=dry_run,
                         timeout=timeout,
                         report=None if fmt is Fmt.json else _evac_line)
    _evac_end(done, fmt, dry_run)


def _evac_line(result: dict[str, Any]) -> None:
    if result["state"] == "moved":
        output.emit_line(f"{result['name']}: moved to {result['host']}")
    else:
        output.emit_line(f"{result['name']}: {result['state']}: "
                         f"{result['error']['message']}")


def _evac_end(done: dict[str, Any], fmt: Fmt, dry_run: bool) -> None:
    bad = [r for r in done["results"] if r["state"] in ("failed", "unplaced")]
    if fmt is Fmt.json:
        output.emit_json(done)
    else:
        for r in done["results"]:
            if r["state"] == "unplaced":
                output.emit_line(f"{r['name']}: fits nowhere: {r['error']['message']}")
            elif dry_run:
                output.emit_line(f"{r['name']}: would move to {r['host']}")
    partial_exit(len(bad), len(done["results"]))


@app.command("restore")
@command
def restore(run: Run, name: str,
            move_back: Annotated[bool, typer.Option(
                "--move-back", help="Move back the VMs its evacuation moved away.")]
            = False,
            max_parallel: Annotated[int, typer.Option(min=1, max=64)] = 1,
            fmt: OutputOpt = Fmt.table) -> None:
    """Undrain a host after maintenance (and, asked, move its VMs back). Exit 5 when
    some VM could not move back."""
    from ppec.operator import evacuate as evac
    done = evac.restore(run.ctx, name, move_back=move_back, max_parallel=max_parallel,
                        report=None if fmt is Fmt.json else _evac_line)
    if fmt is not Fmt.json:
        output.emit_line(f"host {name} undrained")
    _evac_end(done, fmt, False)


@app.command("export-snapshot")
@command
def export_snapshot(run: Run, path: Path, fmt: OutputOpt = Fmt.table) -> None:
    """Write inventory, latest snapshots and HA groups to PATH, for `ppec place
    --from-snapshot PATH` (a decision reproduced anywhere, later)."""
    doc = snapshots.export(run.ctx, path)
    output.emit_record(fmt, doc, message=f"wrote {doc['hosts']} hosts "
                                         f"({doc['with_snapshot']} with a snapshot) to {path}")


@app.command("top")
@command
def top(run: Run,
        name: Annotated[str, typer.Argument(help="Inventory name of the host.")],
        interval: Annotated[float, typer.Option(help="Seconds between refreshes.",
                                                min=0.2)] = 2.0,
        count: Annotated[int | None, typer.Option(
            help="Stop after N refreshes (default: until Ctrl-C on a terminal; 1 with -o "
                 "json or off a terminal, where N > 1 prints one JSON line each).",
            min=1)] = None,
        fmt: OutputOpt = Fmt.table) -> None:
    """The host's VMs, busiest CPU first, refreshing in place on a terminal; one sample
    (after one interval) with -o json or when stdout is not a terminal. Columns and
    -o json fields as `ppec vm stats` (docs/vmstats.md)."""
    import sys

    from ppec.cli import vmstats as view
    from ppec.operator import vmstats
    targets = vmstats.host_targets(run.ctx, name)
    live = fmt is Fmt.table and sys.stdout.isatty()
    view.show(run, targets, interval, count if live else count or 1, live=live,
              title=f"ppec host top {name}")
