"""Base images on this host, stored by their SHA-256 (issue 25), and the byte stream that
brings one here (``image.upload``).

A finished image is ``image_dir/by-digest/DIGEST``: the same path on every host, mode
0444, in directories QEMU (libvirt-qemu) can search, so a VM's ``image`` names it like any
base image under the image dir. A transfer in progress is ``by-digest/.partial/DIGEST``
(0600, in a 0700 dir QEMU cannot enter): never an image. It becomes one only by a rename,
after the whole file hashed to its name. A transfer that broke off keeps what arrived, and
``image.status`` says how much: the next upload goes on from there.

Uploads hold no host lock (a push of GiBs must not hold up creates); a lock file per
digest under the state dir keeps two uploads of one image (and a remove) apart.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ppec.agent.config import AgentConfig
from ppec.agent.console import Streaming
from ppec.agent.files import fsync_dir
from ppec.agent.ledger import VmRecord
from ppec.core.errors import BadInput, Conflict, NoCapacity, PpecError, StorageError
from ppec.core.units import format_size
from ppec.wire import protocol
from ppec.wire.limits import is_sha256

log = logging.getLogger(__name__)
# Free space an upload must leave in the image dir's filesystem beyond its own bytes.
MARGIN = 8 << 20
# Bytes gathered from the socket before each write (and hash update): small enough to
# stay in the CPU cache between recv, write and hash (4 MiB measured slower).
CHUNK = 256 << 10
STALL = 120.0             # a client that sends nothing for this long is taken for gone
# What says a file was written to, renamed over or replaced: size, mtime, inode, ctime.
Stamp = tuple[int, int, int, int]


is_digest = is_sha256


class ImageStore:
    """The by-digest tree of one host's image dir."""

    def __init__(self, image_dir: Path, state_dir: Path) -> None:
        self.image_dir = image_dir
        self.root = image_dir / "by-digest"
        self.partial_dir = self.root / ".partial"
        self.lock_dir = state_dir / "image-locks"

    @classmethod
    def of(cls, config: AgentConfig) -> ImageStore:
        return cls(Path(config.image_dir), Path(config.state_dir))

    def final(self, digest: str) -> Path:
        return self.root / digest

    def partial(self, digest: str) -> Path:
        return self.partial_dir / digest

    def ensure_dirs(self) -> None:
        """by-digest 0755 (QEMU reads images through it), .partial 0700; the image dir
        itself is made 0755 when it is missing, else left as the operator made it."""
        if not self.image_dir.exists():
            self.image_dir.mkdir(parents=True, exist_ok=True)
            self.image_dir.chmod(0o755)
        for path, mode in ((self.root, 0o755), (self.partial_dir, 0o700),
                           (self.lock_dir, 0o700)):
            path.mkdir(parents=True, exist_ok=True)
            if path.stat().st_mode & 0o777 != mode:
                path.chmod(mode)

    def size_of(self, path: Path) -> int | None:
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return None

    def _listing(self, folder: Path) -> list[tuple[str, int]]:
        out = []
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for entry in os.scandir(folder):
                if is_digest(entry.name) and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        out.append((entry.name, entry.stat(follow_symlinks=False).st_size))
        return sorted(out)

    def images(self) -> list[tuple[str, int]]:
        """(digest, size) of every finished image: a directory listing, no hashing."""
        return self._listing(self.root)

    def partials(self) -> list[tuple[str, int]]:
        """(digest, bytes so far) of every transfer that has not finished."""
        return self._listing(self.partial_dir)

    def stamp(self, digest: str) -> Stamp | None:
        """The finished image's stamp now; None when there is no such file."""
        try:
            return _stamp(os.stat(self.final(digest), follow_symlinks=False))
        except FileNotFoundError:
            return None

    def rehash(self, digest: str) -> tuple[str, Stamp, int] | None:
        """(SHA-256 of the finished image as it is now, its stamp from before the first
        byte was read, its mode bits), streamed from disk; None when it is gone. GiBs take
        seconds: callers hold no lock."""
        try:
            fd = os.open(self.final(digest), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            got = hashlib.file_digest(f, "sha256").hexdigest()
        return got, _stamp(st), st.st_mode & 0o7777

    def digest_of(self, ref: str) -> str | None:
        """The image in this store a VM's image, kernel or initrd names (``sha256:D``, or
        a path that resolves to ``by-digest/D``); None for any other file."""
        if ref.startswith("sha256:"):
            digest = ref.removeprefix("sha256:")
            return digest if is_digest(digest) else None
        if not ref:
            return None
        real = Path(os.path.realpath(ref))
        return real.name if is_digest(real.name) and \
            real.parent == Path(os.path.realpath(self.root)) else None

    def users(self, records: Iterable[VmRecord]) -> dict[str, list[str]]:
        """digest -> the VMs (sorted) whose disk is backed by it or that boot from it, by
        the ledger: a stat or two per VM, no hashing."""
        out: dict[str, set[str]] = {}
        for rec in records:
            boot = rec.document.get("boot") or {}
            for ref in (rec.image, str(boot.get("kernel") or ""), str(boot.get("initrd") or "")):
                if (digest := self.digest_of(ref)) is not None:
                    out.setdefault(digest, set()).add(rec.name)
        return {d: sorted(names) for d, names in out.items()}

    def held_by(self, records: Iterable[VmRecord]) -> list[dict[str, Any]]:
        """Every finished image with its size and the VMs on it (host.info): a listing and
        the ledger, no hashing."""
        users = self.users(records)
        return [{"digest": d, "size": size, "vms": users.get(d, [])}
                for d, size in self.images()]

    @contextlib.contextmanager
    def held(self, digest: str) -> Iterator[None]:
        lock = self.lock(digest)
        try:
            yield
        finally:
            lock.release()

    def lock(self, digest: str) -> FileLock:
        """This digest's upload lock, taken now or never (``UPLOAD_BUSY``)."""
        self.ensure_dirs()
        lock = FileLock(str(self.lock_dir / f"{digest}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise Conflict(f"image {digest} is being uploaded to this host by another "
                           f"connection; try again when it has finished",
                           code="UPLOAD_BUSY", details={"digest": digest}) from None
        return lock

    def check_space(self, digest: str, needed: int, freed: int) -> None:
        free = shutil.disk_usage(self.root).free + freed
        if needed + MARGIN > free:
            raise NoCapacity(f"not enough space in {self.image_dir} for image {digest}: "
                             f"{format_size(free)} free, the upload needs "
                             f"{format_size(needed)} (+ {format_size(MARGIN)} spare)",
                             code="NO_SPACE",
                             details={"free_bytes": free, "needed_bytes": needed})

    def open_partial(self, digest: str, size: int, offset: int) -> int:
        """The partial file, open for appending at ``offset`` (0: a fresh one); checked
        under the digest's lock, before anything is written."""
        path = self.partial(digest)
        have = self.size_of(path) or 0
        if offset > size:
            raise BadInput(f"image {digest}: offset {offset} is past its size {size}; "
                           f"start over from 0", code="BAD_PARAMS")
        if offset and offset != have:
            hint = f"resume from {have}, or from 0 to start over" if have else "start at 0"
            raise Conflict(f"image {digest}: the upload starts at byte {offset}, the host "
                           f"has {have} ({hint})", code="OFFSET_MISMATCH",
                           details={"partial": have})
        self.check_space(digest, size - offset, have if offset == 0 else 0)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            if offset == 0:
                os.ftruncate(fd, 0)
            os.lseek(fd, offset, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def finish(self, digest: str, size: int, fd: int,
               hashed: hashlib._Hash | None = None) -> dict[str, Any]:
        """The image, when the partial file hashes to its name, else nothing is left
        (``BAD_IMAGE``). ``hashed`` is the hash of every byte written to the file, taken as
        they were written (an upload's); without it the file is read again."""
        os.fsync(fd)
        path = self.partial(digest)
        actual = os.fstat(fd).st_size
        if hashed is None:
            with path.open("rb") as f:
                hashed = hashlib.file_digest(f, "sha256")
        got = hashed.hexdigest()
        if got != digest or actual != size:
            path.unlink(missing_ok=True)
            fsync_dir(self.partial_dir)
            raise StorageError(f"image {digest}: the {format_size(actual)} received hash to "
                               f"sha256 {got}, expected {digest} ({size} bytes); the "
                               f"transfer was discarded, send it again from 0",
                               code="BAD_IMAGE",
                               details={"expected": digest, "got": got, "bytes": actual})
        os.fchmod(fd, 0o444)
        os.fsync(fd)
        final = self.final(digest)
        os.rename(path, final)
        fsync_dir(self.root)
        fsync_dir(self.partial_dir)
        log.info("image %s (%d bytes) in place at %s", digest, size, final)
        return {"digest": digest, "path": str(final), "size": size}

    def remove(self, digest: str) -> bool:
        """The image and any partial of it; False when there was neither."""
        gone = False
        for path, folder in ((self.final(digest), self.root),
                             (self.partial(digest), self.partial_dir)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                fsync_dir(folder)
                gone = True
        return gone


class Upload(Streaming):
    """The byte stream of one ``image.upload``: ``size - offset`` raw bytes from the
    client appended to the partial file, then one reply line of its own (the image, or
    ``BAD_IMAGE``). A client gone early leaves the partial with what arrived."""

    def __init__(self, store: ImageStore, digest: str, size: int, offset: int, fd: int,
                 lock: FileLock) -> None:
        super().__init__({"stream": "image", "digest": digest, "offset": offset},
                         self._relay, self._close)
        self.store, self.digest, self.size, self.offset = store, digest, size, offset
        self._fd: int | None = fd
        self._lock: FileLock | None = lock
        # The hash of the partial file, kept up to date as bytes are written: hashing in
        # the same pass as the write saves reading a GiB again at the end (a third of a
        # push's time on one core). A resume hashes what the file already has first.
        self._hash = hashlib.sha256()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _relay(self, sock: socket.socket) -> None:
        reply: dict[str, Any] | None = None
        try:
            sock.settimeout(STALL)
            if self._receive(sock):
                assert self._fd is not None
                reply = protocol.reply_ok(self.request_id, self.store.finish(
                    self.digest, self.size, self._fd, self._hash))
        except PpecError as e:
            reply = protocol.reply_error(self.request_id, e.code, e.message,
                                         {**e.details, "kind": type(e).code})
        except Exception as e:  # a bug must cost this upload, never the daemon
            log.exception("image upload %s failed", self.digest)
            reply = protocol.reply_error(self.request_id, "INTERNAL", f"internal error: {e}")
        finally:
            self._close()   # before the answer: whoever reads it may upload or remove at once
        if reply is not None:
            with contextlib.suppress(OSError):
                sock.sendall(protocol.encode(reply))

    def _receive(self, sock: socket.socket) -> bool:
        """Every byte of the rest of the image into the partial file (True), or as many as
        came before the client went away (False)."""
        self._hash_existing()
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        left, filled, done = self.size - self.offset, 0, self.offset
        while left > 0:
            n = _recv(sock, view[filled:filled + min(CHUNK - filled, left)])
            filled, left = filled + n, left - n
            if n == 0 or filled == CHUNK or left == 0:
                self._write(view[:filled])
                done, filled = done + filled, 0
            if n == 0:
                assert self._fd is not None
                os.fsync(self._fd)
                log.info("image %s: the client left at byte %d of %d; kept for a resume",
                         self.digest, done, self.size)
                return False
        return True

    def _hash_existing(self) -> None:
        """The first ``offset`` bytes of the partial file into the hash (a resume)."""
        assert self._fd is not None
        at = 0
        while at < self.offset:
            block = os.pread(self._fd, min(CHUNK, self.offset - at), at)
            if not block:   # open_partial checked the size under the lock: cannot shrink
                raise StorageError(f"image {self.digest}: the partial file ends at {at}, "
                                   f"before the resume offset {self.offset}",
                                   code="STORAGE")
            self._hash.update(block)
            at += len(block)

    def _write(self, data: memoryview) -> None:
        assert self._fd is not None
        self._hash.update(data)
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except OSError as e:
            cls = NoCapacity if e.errno == errno.ENOSPC else StorageError
            raise cls(f"writing image {self.digest} failed: {e.strerror or e}",
                      code="NO_SPACE" if e.errno == errno.ENOSPC else "STORAGE") from None


def _recv(sock: socket.socket, into: memoryview) -> int:
    """Bytes read into ``into``; 0 when the client closed, broke off or stalled."""
    try:
        return sock.recv_into(into)
    except OSError as e:
        log.info("image upload: the client's connection failed: %s", e)
        return 0


def _stamp(st: os.stat_result) -> Stamp:
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


