"""The agent's own files: a manifest by checksum, and an update that swaps them whole.

The desired version is the operator's own ppec package: ``ppec agent sync`` sends the files
whose checksums differ (a tar.gz, base64, inside one protocol line) with the full desired
manifest. The agent stages a complete copy next to its package, checks every checksum and
that the staged code imports, then exchanges the two directories in one atomic rename
(``renameat2(RENAME_EXCHANGE)``) and re-executes itself (same PID). VMs are libvirtd's
children, so they never notice. Stdlib only: the operator side imports this too.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ppec.core.errors import BadInput, PpecError
from ppec.wire.bundle import MAX_PACKAGE_BYTES, check_name, manifest, sha256, too_large, unpack

log = logging.getLogger(__name__)

_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> None:
    """Swap two directories atomically; there is never a moment without a package."""
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100
    if libc.renameat2(at_fdcwd, bytes(a), at_fdcwd, bytes(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"renameat2(RENAME_EXCHANGE) {a} <-> {b}: {os.strerror(err)}")


def write_synced(path: Path, data: bytes, *, flags: int = os.O_EXCL, mode: int = 0o644
                 ) -> None:
    """Write ``data`` and fsync it; never through a link. ``flags``: O_EXCL (a new file)
    or O_TRUNC (a temp file of our own, replaced afterwards)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_dirs(top: Path) -> None:
    """fsync every directory under ``top`` (and it): the names must survive a power cut
    too, not only the bytes."""
    for d in [top, *(p for p in top.rglob("*") if p.is_dir())]:
        fsync_dir(d)


def _import_check(python: str, work: Path, stage: Path) -> None:
    """The staged code must import and run the agent's entry point, as ``ppec-agent serve``
    and sshd's forced command ``ppec-agent proxy`` will (-P and its own cwd: nothing but the
    stage may answer)."""
    pkg = stage.name
    check = (f"import {pkg}, {pkg}.agent.main, {pkg}.agent.daemon, {pkg}.agent.proxy, "
             f"{pkg}.agent.handlers, {pkg}.agent.server\n"
             f"assert {pkg}.__file__.startswith({str(stage)!r}), {pkg}.__file__")
    env = {**os.environ, "PYTHONPATH": str(work)}
    for args in (["-c", check], ["-m", f"{pkg}.agent.main", "default-config"]):
        done = subprocess.run([python, "-P", *args], cwd=work, env=env, capture_output=True,
                              text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise PpecError(f"the new files do not run: "
                            f"{done.stderr.strip().splitlines()[-1:]}", code="BAD_UPDATE")


def cleanup(root: Path) -> None:
    """Staging dirs a crash left behind (the previous package, ``.ppec-previous``, stays:
    it is the way back by hand)."""
    for stale in root.parent.glob(f".{root.name}-update-*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def check_manifest(files: dict[str, Any]) -> None:
    for name, sha in files.items():
        check_name(name)
        if not isinstance(sha, str) or len(sha) != 64:
            raise BadInput(f"manifest entry {name!r} has no sha256", code="BAD_UPDATE")


def from_bundle(root: Path, files: dict[str, str], bundle: str) -> dict[str, bytes]:
    """Every file of the desired manifest: the bundle's (exactly those that differ from
    ``root``), the rest read from ``root``; each checked by checksum."""
    check_manifest(files)
    current = manifest(root)
    changed = sorted(n for n, sha in files.items() if current.get(n) != sha)
    contents = unpack(bundle)
    if sorted(contents) != changed:
        raise BadInput(f"the bundle has {sorted(contents)}, the manifest says "
                       f"{changed} differ", code="BAD_UPDATE")
    for name, data in contents.items():
        if sha256(data) != files[name]:
            raise BadInput(f"{name}: checksum does not match the manifest", code="BAD_UPDATE")
    out = {}
    for name, sha in files.items():
        data = contents[name] if name in contents else (root / name).read_bytes()
        if sha256(data) != sha:
            raise PpecError(f"{name} changed on disk during the update", code="BAD_UPDATE")
        out[name] = data
    if sum(len(d) for d in out.values()) > MAX_PACKAGE_BYTES:
        raise too_large("the package")
    return out


def install(root: Path, files: dict[str, str], contents: dict[str, bytes], python: str,
            checkpoint: Callable[[str], None] = lambda step: None) -> dict[str, Any]:
    """Make ``root`` hold exactly ``files`` with ``contents``; all or nothing. The replaced
    package is kept as ``.<name>-previous``. Returns what changed."""
    current = manifest(root)
    changed = sorted(n for n, sha in files.items() if current.get(n) != sha)
    removed = sorted(n for n in current if n not in files)
    # A fresh 0700 dir of our own (mkdtemp creates it exclusively): nothing planted there.
    work = Path(tempfile.mkdtemp(prefix=f".{root.name}-update-", dir=root.parent))
    stage = work / root.name
    try:
        # Exactly the manifest, as regular files: nothing else of the old package (an
        # extension module, a link) is carried over to shadow what the manifest says.
        for name in files:
            write_synced(stage / name, contents[name])
        _sync_dirs(stage)
        if manifest(stage) != files:
            raise PpecError("staged files do not match the manifest", code="BAD_UPDATE")
        _import_check(python, work, stage)
        checkpoint("staged")
        _exchange(root, stage)
        fsync_dir(root.parent)
        checkpoint("exchanged")
        previous = root.parent / f".{root.name}-previous"
        shutil.rmtree(previous, ignore_errors=True)
        os.rename(stage, previous)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("agent files installed: %d changed, %d removed", len(changed), len(removed))
    return {"changed": changed, "removed": removed}
