"""Volumes in the host's storage dir: empty ones written directly (``ppec.agent.qcow2``),
overlays on a base image made with qemu-img."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from ppec.agent import qcow2
from ppec.core.errors import BadInput, NotFound, StorageError
from ppec.core.units import format_size
from ppec.wire.limits import is_sha256


def qemu_img(*args: str) -> str:
    try:
        done = subprocess.run(["qemu-img", *args], capture_output=True, text=True,
                              timeout=120, check=False)
    except FileNotFoundError:
        raise StorageError("qemu-img is not installed on this host") from None
    except subprocess.TimeoutExpired:
        raise StorageError(f"qemu-img {args[0]} did not finish within 120 s") from None
    if done.returncode != 0:
        raise StorageError(f"qemu-img {args[0]} failed: "
                           f"{done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def check_image_path(path: str, image_dir: Path, what: str = "image") -> None:
    """Base images, kernels and initrds come only from the image dir: a VM given any other
    host file would let its guest read that file, and never a transfer in progress."""
    p = Path(path)
    if not p.is_absolute():
        raise BadInput(f"{what} path {path!r} must be absolute (a path on the host)")
    if not p.resolve().is_relative_to(image_dir.resolve()):
        raise BadInput(f"{what} {path} is not under the image dir {image_dir}",
                       code="IMAGE_OUTSIDE")
    if p.resolve().is_relative_to((image_dir / "by-digest" / ".partial").resolve()):
        raise BadInput(f"{what} {path} is an image still being pushed", code="IMAGE_PARTIAL")
    if not p.is_file():
        raise BadInput(f"{what} {path} does not exist on this host", code="NOT_FOUND")


def image_path(ref: str, image_dir: Path, what: str = "image") -> str:
    """A catalogue reference (``sha256:DIGEST``, what `vm create --image NAME` sends) as the
    path this host keeps it at; a path stays as it is (checked by check_image_path)."""
    if not ref.startswith("sha256:"):
        return ref
    digest = ref.removeprefix("sha256:")
    if not is_sha256(digest):
        raise BadInput(f"{what} {ref!r} is not sha256: and 64 hex digits", code="BAD_PARAMS")
    path = image_dir / "by-digest" / digest
    if not path.is_file():
        raise NotFound(f"{what} {digest[:12]} is not on this host (`ppec image push`)",
                       code="IMAGE_MISSING")
    return str(path)


def image_info(path: str, image_dir: Path) -> tuple[str, int]:
    """(format, virtual size) of a base image in the image dir."""
    check_image_path(path, image_dir)
    info = json.loads(qemu_img("info", "--output=json", "-U", path))
    return str(info["format"]), int(info["virtual-size"])


def check_space(storage_dir: Path, size: int) -> None:
    free = shutil.disk_usage(storage_dir).free
    if free < size:
        raise StorageError(f"not enough space in {storage_dir}: {format_size(free)} free, "
                           f"the disk needs {format_size(size)}", code="NO_SPACE",
                           details={"free_bytes": free, "needed_bytes": size})


def _exists(path: Path) -> StorageError:
    return StorageError(f"volume {path} already exists; refusing to overwrite it",
                        code="VOLUME_EXISTS")


def create_volume(path: Path, size: int, image: str = "",
                  image_dir: Path = Path("/var/lib/ppec/images")) -> None:
    """A qcow2 of ``size`` bytes, optionally a copy-on-write overlay of ``image``."""
    if path.exists():
        raise _exists(path)
    if not image:
        check_space(path.parent, size)
        try:
            qcow2.create(path, size)   # refuses a path made since (O_EXCL)
        except FileExistsError:
            raise _exists(path) from None
        except OSError as e:
            raise StorageError(f"creating volume {path} failed: {e.strerror or e}") from None
        return
    fmt, virtual = image_info(image, image_dir)
    if size < virtual:
        raise BadInput(f"disk size {format_size(size)} is smaller than image {image} "
                       f"({format_size(virtual)})")
    check_space(path.parent, size)
    qemu_img("create", "-q", "-f", "qcow2", "-b", image, "-F", fmt, str(path), str(size))
    os.chmod(path, 0o600)


def remove_logs(log: Path) -> None:
    """A VM's console log and the copies virtlogd rotated out (x.log, x.log.0, …)."""
    for path in log.parent.glob(f"{log.name}*"):
        path.unlink(missing_ok=True)


def remove_volume(path: Path, storage_dir: Path) -> bool:
    """Remove a volume ppec made; never anything outside the storage dir."""
    if path.resolve().parent != storage_dir.resolve():
        raise StorageError(f"refusing to remove {path}: not in the storage dir {storage_dir}")
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
