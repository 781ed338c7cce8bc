"""What ``ppec vm show``, ``start`` and ``stop`` do, without typer: one library call, render.

``ppec.cli.vm`` declares the verbs for typer (options, help); ``ppec.cli.quick`` runs the
same functions when a command line needs no help and no usage error. Runbooks call these in
loops (poll a VM's state, stop and start it around a change).
"""

from __future__ import annotations

import sys
from typing import Any

from ppec.cli import output
from ppec.cli.output import Fmt
from ppec.cli.run import Run
from ppec.core.units import MIB, format_size
from ppec.operator import lifecycle

FIELDS = [("name", "name"), ("host", "host"), ("state", "state"), ("vcpus", "vcpus"),
          ("memory", "memory"), ("disk", "disk"), ("disk_path", "disk path"),
          ("image", "image"), ("uuid", "uuid"), ("created_at", "created"),
          ("nics_text", "nics")]


def nic_text(nic: dict[str, Any]) -> str:
    """``10.0.0.5/24 02:70:70:0a:1b:2c on br-blue (vnet3)``: one NIC as people read it."""
    where = f" on {nic['bridge']}" if nic.get("bridge") else ""
    tap = f" ({nic['target']})" if nic.get("target") else ""
    return f"{nic.get('address') or 'dhcp'} {nic.get('mac', '')}{where}{tap}"


def human(vm: dict[str, Any]) -> dict[str, Any]:
    """A VM's sizes and NICs as people read them (tables and key: value records)."""
    return {**vm, "memory": format_size(int(vm.get("memory_mib", 0)) * MIB),
            "disk": format_size(int(vm.get("disk_bytes", 0))) if vm.get("disk_bytes") else "-",
            "nics_text": "; ".join(nic_text(n) for n in vm.get("nics") or []) or "-",
            "address": vm.get("address") or "-"}


def show(run: Run, name: str, *, host: str | None, xml: bool, tuning: bool,
         fmt: Fmt) -> None:
    if xml:
        doc = lifecycle.xml(run.ctx, name, host)
        if fmt is Fmt.json:
            output.emit_json(doc)
        else:
            sys.stdout.write(doc["xml"] + "\n")
        return
    doc = lifecycle.show(run.ctx, name, host)
    if tuning:
        doc["tuning"] = lifecycle.tuning(run.ctx, name, doc.get("host") or host)
    output.emit_record(fmt, human(doc) if fmt is Fmt.table else doc, FIELDS)
    if tuning and fmt is Fmt.table:
        _tuning_table(doc["tuning"])


def _tuning_table(t: dict[str, Any]) -> None:
    x, mem = t["xml"], t.get("memory") or {}
    output.emit_line("disks: " + "; ".join(
        f"{d['target']} cache={d['cache']} io={d['io']} discard={d['discard']}"
        f"{' iothread=' + d['iothread'] if d['iothread'] else ''}" for d in x["disks"])
        + f" ({t['disk_tuning']['why']})")
    if mem:
        nodes = ", ".join(f"{k} {format_size(v * 1024)}" for k, v in mem["nodes"].items())
        output.emit_line(f"memory: {mem['backing']} ({mem['page_kib']} KiB pages), "
                         f"{nodes or '-'}")
    if t.get("note"):
        output.emit_line(t["note"])
    output.emit_table(t["threads"], [("tid", "TID"), ("name", "THREAD"), ("role", "ROLE"),
                                     ("cpus", "CPUS ALLOWED")])


def start(run: Run, name: str, *, host: str | None, fmt: Fmt) -> None:
    doc = lifecycle.start(run.ctx, name, host)
    output.emit_record(fmt, doc, message=f"{name}: {doc['state']}")


def stop(run: Run, name: str, *, force: bool, timeout: int, host: str | None,
         fmt: Fmt) -> None:
    doc = lifecycle.stop(run.ctx, name, force=force, timeout=timeout, host=host)
    output.emit_record(fmt, doc, message=f"{name}: {doc['state']}")
