"""``ppec ip``: IP pools per VRF and their addresses."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ppec.cli import output
from ppec.cli.common import OutputOpt, Run, command
from ppec.cli.output import Fmt
from ppec.core.errors import NotFound
from ppec.core.signing import Signer
from ppec.operator import ipdb, makerchecker

app = typer.Typer(help="IP pools per VRF: add pools, allocate, release, list.",
                  no_args_is_help=True)
pool_app = typer.Typer(help="IP pools: add, list.", no_args_is_help=True)
app.add_typer(pool_app, name="pool")

VrfOpt = Annotated[str, typer.Option("--vrf", help="The VRF (routing domain).")]


@pool_app.command("add")
@command
def pool_add(
    run: Run,
    name: str,
    vrf: VrfOpt,
    cidr: Annotated[str, typer.Option(help="e.g. 10.20.0.0/24")],
    gateway: Annotated[str, typer.Option(help="Never handed out.")] = "",
    reserve: Annotated[list[str] | None, typer.Option(
        help="An address or range A-B never handed out (repeatable).")] = None,
    dns: Annotated[list[str] | None, typer.Option(help="DNS server (repeatable).")] = None,
    fmt: OutputOpt = Fmt.table,
) -> None:
    """Add a pool to a VRF (pools in one VRF may not overlap)."""
    pool = ipdb.add_pool(run.ctx.store, name, vrf, cidr, gateway, reserve, dns)
    output.emit_record(fmt, pool.as_dict(),
                       message=f"added pool {name} ({pool.cidr}, {pool.usable()} usable) "
                               f"to VRF {vrf}")


@pool_app.command("list")
@command
def pool_list(run: Run, fmt: OutputOpt = Fmt.table) -> None:
    """List pools with their usable address count."""
    rows = [p.as_dict() for p in ipdb.pools(run.ctx.store)]
    output.emit_list(fmt, {"pools": rows}, "pools",
                     [("name", "POOL"), ("vrf", "VRF"), ("cidr", "CIDR"),
                      ("gateway", "GATEWAY"), ("usable", "USABLE"), ("reserved", "RESERVED")])


@app.command("list")
@command
def list_(run: Run, vrf: Annotated[str | None, typer.Option(help="Only this VRF.")] = None,
          fmt: OutputOpt = Fmt.table) -> None:
    """List allocated addresses with their owner."""
    rows = ipdb.addresses(run.ctx.store, vrf)
    output.emit_list(fmt, {"addresses": rows}, "addresses",
                     [("vrf", "VRF"), ("address", "ADDRESS"), ("pool", "POOL"),
                      ("owner", "OWNER"), ("allocated_at", "SINCE")])


@app.command("allocate")
@command
def allocate(run: Run, vrf: VrfOpt,
             address: Annotated[str, typer.Option(help="This address, not the next.")] = "",
             owner: Annotated[str, typer.Option(help="Who holds it (free text).")] = "",
             fmt: OutputOpt = Fmt.table) -> None:
    """Allocate the next free address of the VRF (or a given one). Exit 3 when exhausted."""
    doc = ipdb.allocate(run.ctx.store, vrf, owner=owner, address=address)
    output.emit_record(fmt, doc, message=f"{doc['address']}/{doc['prefix']} in VRF {vrf}")


@app.command("release")
@command
def release(run: Run, address: str, vrf: VrfOpt, fmt: OutputOpt = Fmt.table) -> None:
    """Give an address back to its pool (a maker-checker request when policy says so)."""
    run.hold_if("ip", "release", lambda signer: makerchecker.create(
        run.ctx, signer, "release", "ip", address, params={"vrf": vrf}))
    doc = ipdb.release(run.ctx.store, vrf, address)
    output.emit_record(fmt, doc, message=f"released {address} in VRF {vrf}")


@app.command("update")
@command
def update(run: Run, address: str, vrf: VrfOpt,
           owner: Annotated[str, typer.Option(help="The new owner (free text).")],
           fmt: OutputOpt = Fmt.table) -> None:
    """Give an allocated address another owner (a maker-checker request when policy says
    so; the request names the current owner, and is refused if that changed)."""
    def request(signer: Signer) -> dict[str, Any]:
        current = next((a for a in ipdb.addresses(run.ctx.store, vrf)
                        if a["address"] == address), None)
        if current is None:
            raise NotFound(f"{address} is not allocated in VRF {vrf}")
        return makerchecker.create(run.ctx, signer, "update", "ip", address,
                                   params={"vrf": vrf, "owner": owner,
                                           "from_owner": current["owner"]})

    run.hold_if("ip", "update", request)
    doc = ipdb.update(run.ctx.store, vrf, address, owner)
    output.emit_record(fmt, doc, message=f"{address} in VRF {vrf}: owner "
                                         f"{doc['previous_owner'] or '-'} -> {owner}")
