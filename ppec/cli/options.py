"""Options shared by `vm create` and `place`: the shape of a VM and where it may go."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ppec.core.errors import BadInput
from ppec.core.units import check_label
from ppec.operator.config import Config
from ppec.wire.limits import HUGEPAGE_KIB
from ppec.wire.vmspec import EMULATORS, POLICIES, THREADS, Pinning, literal

if TYPE_CHECKING:
    from ppec.operator.choose import Ask
    from ppec.operator.context import Context
    from ppec.operator.vms import GuestAsk


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


class Spread(StrEnum):
    host = "host"
    rack = "rack"
    power_domain = "power_domain"


Image = Annotated[str, typer.Option(
    metavar="NAME[@DIGEST]|PATH",
    help="A catalogue image (`ppec image list`; pushed first to a host that lacks it, "
         "unless [images] push_on_create = false), or a path in the host's image dir; "
         "the root disk is a copy-on-write overlay of it.")]
Kernel = Annotated[str, typer.Option(
    help="Boot this kernel directly (a catalogue kernel NAME, or a path in the host's "
         "image dir) instead of the disk's boot loader.")]
Initrd = Annotated[str, typer.Option(
    help="Initrd for --kernel (a catalogue initrd NAME, or a path in the image dir).")]
Nics = Annotated[list[str] | None, typer.Option(
    "--nic", metavar="VRF[=ADDRESS]",
    help="Another NIC, on VRF's network, with the next free address of its pool (or "
         "ADDRESS); repeatable. The first NIC is always on the host's VRF and carries the "
         "default route.")]
SshKeys = Annotated[list[Path] | None, typer.Option(
    "--ssh-key", metavar="FILE",
    help="A public key file (e.g. ~/.ssh/id_ed25519.pub) the guest accepts; repeatable, "
         "added to [guest] ssh_keys of the config.")]
UserData = Annotated[Path | None, typer.Option(
    "--user-data", metavar="FILE",
    help="Your cloud-init user-data (#cloud-config or a #! script, UTF-8, at most 64 KiB), "
         "merged with ppec's (hostname, keys, network) so neither is lost.")]
Cpus = Annotated[int | None, typer.Option(help="vCPUs.", min=1, max=1024)]
Memory = Annotated[str | None, typer.Option(help="Memory, e.g. 512M, 4G.")]
Disk = Annotated[str | None, typer.Option(help="Root disk size, e.g. 20G.")]
Flavor = Annotated[str | None, typer.Option(
    help="A named shape from the config (tiny, small, medium, large, xlarge); "
         "--cpus/--memory/--disk override its parts.")]
Region = Annotated[str, typer.Option(help="Only hosts in this region.")]
Vrf = Annotated[str, typer.Option(help="Only hosts in this VRF.")]
Tag = Annotated[list[str] | None, typer.Option(
    "--tag", help="Only hosts with this tag (repeatable: all of them).")]
HaGroup = Annotated[str, typer.Option(
    help="HA group: no two members share a host (or rack, power domain: --spread).")]
SpreadOpt = Annotated[Spread, typer.Option(
    "--spread", help="What members of the HA group never share.")]
Numa = Annotated[NumaPolicy, typer.Option(
    help="dedicated: vCPUs pinned to host CPUs of their own, memory bound to their NUMA "
         "node(s); shared: vCPUs float over the CPUs no dedicated VM holds.")]
NumaNodes = Annotated[int, typer.Option(
    help="Spread over exactly N NUMA nodes (dedicated); default: one node when it fits, "
         "else the fewest.", min=0, max=64)]
ThreadsOpt = Annotated[Threads, typer.Option(
    "--threads", help="SMT siblings (dedicated): prefer packs vCPUs on sibling threads; "
                      "isolate gives each vCPU a whole core; require uses whole sibling "
                      "sets only.")]
EmulatorOpt = Annotated[Emulator, typer.Option(
    "--emulator", help="QEMU's own threads (dedicated): share the VM's CPUs, or isolate on "
                       "one more CPU.")]


HugepagesOpt = Annotated[str, typer.Option(
    "--hugepages", help="Back the memory with huge pages of this size (2M or 1G; "
                        "dedicated VMs): fewer TLB misses. The host must have that many "
                        "free pages reserved on the VM's node(s) (host show --numa).")]


def make_ask(config: Config, flavor: str | None, cpus: int | None, memory: str | None,
             disk: str | None, *, disk_required: bool = True,
             numa: NumaPolicy = NumaPolicy.shared, numa_nodes: int = 0,
             threads: Threads = Threads.prefer, emulator: Emulator = Emulator.share,
             region: str = "", vrf: str = "", tag: list[str] | None = None,
             ha_group: str = "", spread: Spread = Spread.host, hugepages: str = "") -> Ask:
    """The options above, as one placement request: the VM's Shape (from a flavor and/or
    explicit sizes; explicit ones win) and where it may go."""
    if flavor is None and (cpus is None or memory is None or (disk is None and disk_required)):
        raise BadInput("give --flavor, or all of --cpus, --memory" +
                       (" and --disk" if disk_required else ""))
    pinning = Pinning(policy=literal(numa.value, POLICIES, "--numa"), nodes=numa_nodes,
                      threads=literal(threads.value, THREADS, "--threads"),
                      emulator=literal(emulator.value, EMULATORS, "--emulator"),
                      hugepages=_page_kib(hugepages))
    from ppec.operator.choose import Ask, shape_from, spread_level  # what places, only
    return Ask(shape_from(config, flavor, cpus, memory, disk, pinning), region=region, vrf=vrf,
               tags=tuple(tag or ()), ha_group=ha_group, spread=spread_level(spread.value))


def _page_kib(text: str) -> int:
    if not text:
        return 0
    if text.upper() not in HUGEPAGE_KIB:
        raise BadInput(f"--hugepages {text!r}: use 2M or 1G")
    return HUGEPAGE_KIB[text.upper()]


def parse_nic(text: str) -> tuple[str, str]:
    """``--nic VRF[=ADDRESS]`` as (VRF, ADDRESS or "")."""
    vrf, _, address = text.partition("=")
    vrf, address = vrf.strip(), address.strip()
    if not vrf or (_ and not address):
        raise BadInput(f"--nic {text!r}: use VRF or VRF=ADDRESS")
    check_label(vrf, "--nic VRF")
    return vrf, address


def _read(path: Path, option: str, limit: int) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(limit + 1)
    except FileNotFoundError:
        raise BadInput(f"{option} {path}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{option} {path}: is a directory, not a file") from None
    except OSError as e:
        raise BadInput(f"{option} {path}: {e.strerror}") from None


def read_key_file(path: Path) -> list[str]:
    """``--ssh-key FILE``: the public keys in it; a private key or a non-key refused."""
    from ppec.wire.guest import MAX_KEY_LENGTH, read_public_keys
    data = _read(path, "--ssh-key", 64 * MAX_KEY_LENGTH)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"--ssh-key {path}: not a public key file (not text)") from None
    return read_public_keys(text, f"--ssh-key {path}")


def read_user_data(path: Path) -> str:
    from ppec.wire.guest import MAX_USER_DATA
    from ppec.wire.guest import read_user_data as check
    return check(_read(path, "--user-data", MAX_USER_DATA), f"--user-data {path}")


def guest_ask(nics: list[str] | None, key_files: list[Path] | None,
              user_data: Path | None) -> GuestAsk:
    """``--nic``, ``--ssh-key`` and ``--user-data`` read and checked (exit 2 on bad ones)."""
    from ppec.operator.vms import GuestAsk
    return GuestAsk(nics=tuple(parse_nic(n) for n in nics or ()),
                    ssh_keys=tuple(k for f in key_files or () for k in read_key_file(f)),
                    user_data=read_user_data(user_data) if user_data else "")


def with_image(ctx: Context, ask: Ask, image: str) -> Ask:
    """``place --image NAME``: the image's digest in the request, with the push policy."""
    if not image:
        return ask
    from dataclasses import replace

    from ppec.operator import images, vmimages
    return replace(ask, images=(images.resolve(ctx.store, image).digest,),
                   push_images=vmimages.push_on_create(ctx))
