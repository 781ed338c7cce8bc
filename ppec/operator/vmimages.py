"""A VM's catalogue images (disk, kernel, initrd): named on the command line, sent to the
host as ``sha256:DIGEST``, and pushed to the chosen host before the build when it lacks
them (``[images] push_on_create``, on by default) (issue 25)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ppec.core.errors import BadInput, NotFound
from ppec.core.units import format_size
from ppec.operator import images
from ppec.operator.context import Context
from ppec.operator.store import Store
from ppec.wire.vmspec import KernelBoot


@dataclass(frozen=True)
class VmImages:
    image: str                          # "sha256:…", a host path (as before), or ""
    boot: KernelBoot | None
    needed: tuple[images.Image, ...]    # catalogue images the host must hold

    @property
    def digests(self) -> tuple[str, ...]:
        return tuple(i.digest for i in self.needed)


def _is_name(ref: str) -> bool:
    """A catalogue name (``debian12``, ``debian12@1b7af784``), not a host path."""
    return bool(ref) and not ref.startswith("/")


def resolve(store: Store, image: str, boot: KernelBoot | None, disk_bytes: int) -> VmImages:
    """Catalogue names as digests; a ``--disk`` smaller than the image is exit 2."""
    needed: list[images.Image] = []

    def one(ref: str, kind: str) -> str:
        if not _is_name(ref):
            return ref
        try:
            found = images.resolve(store, ref, kind)
        except NotFound:
            raise NotFound(f"unknown image {ref!r}: not in the catalogue (`ppec image "
                           f"list`), and a path on the host must be absolute") from None
        needed.append(found)
        return images.ref(found.digest)

    ref = one(image, "disk")
    if needed and disk_bytes < needed[0].virtual_bytes:
        raise BadInput(f"--disk {format_size(disk_bytes)} is smaller than image "
                       f"{needed[0].name} ({format_size(needed[0].virtual_bytes)})")
    if boot is not None:
        boot = replace(boot, kernel=one(boot.kernel, "kernel"),
                       initrd=one(boot.initrd, "initrd") if boot.initrd else "")
    return VmImages(ref, boot, tuple(needed))


def push_on_create(ctx: Context) -> bool:
    value = ctx.config.raw.get("images", {}).get("push_on_create", True)
    if not isinstance(value, bool):
        raise BadInput(f"config {ctx.config.source}: [images] push_on_create must be true "
                       f"or false")
    return value


def ensure_on(ctx: Context, host: str, wanted: VmImages, held: frozenset[str]) -> None:
    """Push the images ``host`` lacks (per its snapshot) before the build; the host's own
    answer decides (a push of an image it has is a no-op)."""
    from ppec.operator import imagepush
    for image in wanted.needed:
        if image.digest not in held:
            imagepush.push(ctx, ctx.store.host(host), image)
            images.record_host(ctx.store, image.digest, host)
