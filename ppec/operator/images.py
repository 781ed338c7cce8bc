"""The image catalogue: base images (and kernels, initrds) by name and SHA-256 (issue 25).

A name points to its newest digest; adding another file under a name makes a new version,
and the older ones stay while any VM uses them. Hosts hold images at one path by digest
(``image_dir/by-digest/SHA256``, read-only), pushed over the agent's own channel
(``ppec.operator.imagepush``); the catalogue records which hosts received which digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppec.core.clock import utc_now
from ppec.core.errors import AlreadyExists, BadInput, Conflict, NotFound, StorageError
from ppec.core.units import check_label
from ppec.operator.store import Store

if TYPE_CHECKING:
    from ppec.operator.context import Context

KINDS = ("disk", "kernel", "initrd")
_COLS = ("name, digest, kind, format, virtual_bytes, file_bytes, source, os_user, "
         "description, added_at, version")


@dataclass(frozen=True)
class Image:
    name: str
    digest: str
    kind: str
    format: str            # qcow2 | raw (kernels and initrds: raw)
    virtual_bytes: int
    file_bytes: int
    source: str            # the file on this machine it was read from (pushes read it)
    os_user: str = ""
    description: str = ""
    added_at: str = ""
    version: int = 1       # 1, 2, … per name: the highest is what NAME means

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def inspect(path: Path, kind: str) -> tuple[str, int]:
    """(format, virtual size) of a disk image by ``qemu-img info``; a kernel or initrd is
    raw bytes. A disk with a backing file or an external data file is refused: on a host
    it would read files the catalogue does not hold."""
    if kind != "disk":
        return "raw", path.stat().st_size
    try:
        done = subprocess.run(["qemu-img", "info", "--output=json", str(path)],
                              capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise StorageError("qemu-img is not installed on this machine") from None
    if done.returncode != 0:
        raise BadInput(f"{path} is not a disk image qemu-img can read: "
                       f"{done.stderr.strip()}")
    info = json.loads(done.stdout)
    fmt = str(info.get("format", ""))
    if fmt not in ("qcow2", "raw"):
        raise BadInput(f"{path} is a {fmt} image; ppec takes qcow2 or raw")
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise BadInput(f"{path} has a backing file ({info.get('backing-filename')}); "
                       f"give a standalone image (qemu-img convert -O qcow2 …)")
    if (info.get("format-specific", {}).get("data", {}) or {}).get("data-file"):
        raise BadInput(f"{path} keeps its data in an external file; give a standalone image")
    return fmt, int(info["virtual-size"])


def add(store: Store, name: str, path: Path, *, kind: str = "disk", os_user: str = "",
        description: str = "") -> Image:
    """Register ``path`` under ``name`` (a new version when the name exists)."""
    check_label(name, "image name")
    if kind not in KINDS:
        raise BadInput(f"--kind must be one of {', '.join(KINDS)}")
    path = path.expanduser().resolve()
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    fmt, virtual = inspect(path, kind)
    digest = sha256_file(path)
    with store.transaction() as db:
        last = db.execute("SELECT max(version) FROM images WHERE name=?", (name,)).fetchone()
        image = Image(name, digest, kind, fmt, virtual, path.stat().st_size, str(path),
                      os_user, description, utc_now(), int(last[0] or 0) + 1)
        try:
            db.execute(f"INSERT INTO images ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (image.name, image.digest, image.kind, image.format,
                        image.virtual_bytes, image.file_bytes, image.source, image.os_user,
                        image.description, image.added_at, image.version))
        except store.db.IntegrityError:
            raise AlreadyExists(f"image {name} already has version {image.digest[:12]} "
                                f"(the same file)") from None
    return image


def versions(store: Store, name: str | None = None) -> list[Image]:
    """Every version, newest (highest version) first within a name."""
    sql, args = f"SELECT {_COLS} FROM images", ()  # type: tuple[str, tuple[str, ...]]
    if name is not None:
        sql, args = sql + " WHERE name=?", (name,)
    rows = store.db.execute(sql + " ORDER BY name, version DESC", args).fetchall()
    return [Image(*r) for r in rows]


def resolve(store: Store, ref: str, kind: str | None = "disk") -> Image:
    """``NAME`` (its newest version) or ``NAME@DIGEST`` (a prefix of 8 or more digits), of
    ``kind`` (None: any)."""
    name, _, want = ref.partition("@")
    found = versions(store, name)
    if not found:
        raise NotFound(f"unknown image {name!r} (see `ppec image list`)")
    if want:
        found = [i for i in found if i.digest.startswith(want.lower())]
        if len(want) < 8 or len(found) != 1:
            raise BadInput(f"image {ref}: give 8 or more digits of exactly one version of "
                           f"{name}", code="NOT_FOUND")
    image = found[0]
    if kind is not None and image.kind != kind:
        raise BadInput(f"image {name} is a {image.kind}, not a {kind}")
    return image


def record_host(store: Store, digest: str, host: str) -> None:
    with store.transaction() as db:
        db.execute("INSERT INTO image_hosts (digest, host, at) VALUES (?, ?, ?) "
                   "ON CONFLICT(digest, host) DO UPDATE SET at=excluded.at",
                   (digest, host, utc_now()))


def forget_host(store: Store, digest: str, host: str) -> None:
    with store.transaction() as db:
        db.execute("DELETE FROM image_hosts WHERE digest=? AND host=?", (digest, host))


def hosts_of(store: Store, digest: str) -> list[str]:
    rows = store.db.execute("SELECT host FROM image_hosts WHERE digest=? ORDER BY host",
                            (digest,)).fetchall()
    return [str(r[0]) for r in rows]


def ref(digest: str) -> str:
    """How a VM's document names a catalogue image: the host finds it by this."""
    return f"sha256:{digest}"


def users_by_digest(store: Store) -> dict[str, list[str]]:
    """digest -> the VMs whose document names it (disk image, kernel or initrd), sorted:
    one pass over the documents that name any catalogue image."""
    out: dict[str, list[str]] = {}
    rows = store.db.execute("SELECT name, spec FROM vms WHERE spec LIKE ? ORDER BY name",
                            ("%sha256:%",)).fetchall()
    for name, spec in rows:
        doc = json.loads(spec)
        boot = doc.get("boot") or {}
        for named in {doc.get("image"), boot.get("kernel"), boot.get("initrd")}:
            if isinstance(named, str) and named.startswith("sha256:"):
                out.setdefault(named.removeprefix("sha256:"), []).append(str(name))
    return out


def users(store: Store, digest: str) -> list[str]:
    """VMs in the store whose document names this image."""
    return users_by_digest(store).get(digest, [])


def views(store: Store, found: list[Image]) -> list[dict[str, Any]]:
    """Each version with the hosts holding it and the VMs using it (the documents read
    once for all of them)."""
    used = users_by_digest(store) if found else {}
    return [{**i.as_dict(), "hosts": hosts_of(store, i.digest), "vms": used.get(i.digest, [])}
            for i in found]


def _chosen(store: Store, name: str, digest: str) -> list[Image]:
    found = versions(store, name)
    if not found:
        raise NotFound(f"unknown image {name!r} (see `ppec image list`)")
    if digest:
        found = [i for i in found if i.digest.startswith(digest)]
        if len(found) != 1:
            raise BadInput(f"--version {digest}: not exactly one version of {name}",
                           code="NOT_FOUND")
    return found


def remove_from_host(ctx: Context, name: str, digest: str, host: str) -> list[str]:
    """The host deletes its copy; it refuses (IMAGE_IN_USE) while a VM of its uses it."""
    target = ctx.store.host(host)
    done = []
    for image in _chosen(ctx.store, name, digest):
        with contextlib.suppress(NotFound):   # not there: what was asked holds
            ctx.client(target).call("image.remove", digest=image.digest)
        forget_host(ctx.store, image.digest, host)
        done.append(image.digest)
    return done


def remove(store: Store, name: str, digest: str = "") -> list[str]:
    """Drop a name's versions (or one) from the catalogue; refused while a VM uses one."""
    found = _chosen(store, name, digest)
    for image in found:
        used = users(store, image.digest)
        if used:
            raise Conflict(f"image {name} ({image.digest[:12]}) is used by "
                           f"{', '.join(used)}; delete or rebuild them first",
                           code="IMAGE_IN_USE", details={"vms": used})
    with store.transaction() as db:
        for image in found:
            db.execute("DELETE FROM images WHERE name=? AND digest=?", (name, image.digest))
    return [i.digest for i in found]
