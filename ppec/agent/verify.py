"""The agent checks its own installed files against the release it last accepted: at
start and every ``verify_interval``. A difference is the drift alert AGENT_FILES_CHANGED
(reported by ``drift.check``, so ``ppec alerts`` shows it) and a log line each time.

The base images it holds (``image_dir/by-digest``, issue 25) are hashed again on the same
schedule, in a thread of their own (``ImageWatch``): one that no longer hashes to its name
is IMAGE_CHANGED, one a VM in the ledger uses but by-digest lacks is IMAGE_MISSING; they
join the same alert list."""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ppec.agent import drift
from ppec.agent.context import AgentContext
from ppec.agent.images import ImageStore, Stamp, is_digest
from ppec.agent.ledger import VmRecord
from ppec.agent.releases import Releases, differ
from ppec.wire import bundle as pkgfiles

log = logging.getLogger(__name__)
CODE = "AGENT_FILES_CHANGED"
OBJECT = "ppec-agent"
# An image whose stamp (size, mtime, inode, ctime) is what it was when last hashed is not
# read again, except on every FULL_EVERY-th pass (the first is one): a write through the
# filesystem changes ctime, which no one can set back, but a fault below it (bit rot, a
# write to the block device) changes no stamp. Each image is read at least once every
# FULL_EVERY intervals, and never more than once an interval.
FULL_EVERY = 12


def alerts_for(names: list[str], root: Path) -> list[tuple[str, str, str]]:
    if not names:
        return []
    shown = ", ".join(names[:10]) + (f" (+{len(names) - 10} more)" if len(names) > 10 else "")
    return [(CODE, OBJECT, f"{len(names)} file(s) under {root} differ from the accepted "
                           f"release: {shown}")]


def check(ctx: AgentContext, releases: Releases) -> list[tuple[str, str, str]]:
    """Compare now; keep the result on ``ctx`` and log it when there is a difference."""
    root = pkgfiles.package_root()
    current = releases.pointer().current
    want = releases.accepted().get(current) if current else None
    if want is None:   # no accepted release recorded: what runs is the reference
        want = ctx.running
    names = differ(want, pkgfiles.manifest(root))
    # Files on disk that match but differ from what this process runs (a swap behind
    # its back it has not restarted onto) are drift too: name what runs differently.
    if not names and want != ctx.running:
        names = [f"running:{n}" for n in differ(want, ctx.running)]
    ctx.file_alerts = alerts_for(names, root)
    if names:
        log.warning("%s: %s", CODE, ctx.file_alerts[0][2])
    return ctx.file_alerts


def start(ctx: AgentContext, releases: Releases, interval: float,
          stopping: threading.Event,
          locked: Callable[[], AbstractContextManager[Any]]) -> None:
    """Every ``interval`` seconds (0: never again after start), under the host lock, so an
    update's exchange is never seen half-way."""
    if interval <= 0:
        return

    def loop() -> None:
        while not stopping.wait(interval):
            try:
                with locked():
                    if not ctx.restart_requested:
                        check(ctx, releases)
            except Exception:   # a failed check must not stop the next one
                log.exception("file verification failed")
    threading.Thread(target=loop, name="verify", daemon=True).start()


class ImageWatch:
    """The last hash of every finished image here, and the alerts it and the ledger make.

    ``run`` hashes (streaming, no lock held but its own, briefly); ``alerts`` only stats
    and reads the ledger, so drift.check stays cheap."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        # digest -> (its stamp when hashed, what it hashed to, its mode bits then)
        self._last: dict[str, tuple[Stamp, str, int]] = {}
        self.passes = 0

    def run(self) -> int:
        """One pass over the images by-digest holds now; how many were read."""
        full, read = self.passes % FULL_EVERY == 0, 0
        listed = {d for d, _ in self.store.images()}
        for digest in sorted(listed):
            with self._lock:
                last = self._last.get(digest)
            if not full and last is not None and last[0] == self.store.stamp(digest):
                continue
            now = self._hash(digest)
            if now is None:
                continue   # removed since the listing
            read += 1
            if now[1] != digest and (last is None or last[1] != now[1]):
                log.warning("%s: %s %s", drift.IMAGE_CHANGED, self.store.final(digest),
                            _hashes_to(now[1]))
            with self._lock:
                self._last[digest] = now
        with self._lock:
            for gone in set(self._last) - listed:
                del self._last[gone]
        self.passes += 1
        return read

    def _hash(self, digest: str) -> tuple[Stamp, str, int] | None:
        try:
            got = self.store.rehash(digest)
        except OSError as e:   # an unreadable image is no better than a changed one
            stamp = self.store.stamp(digest)
            return None if stamp is None else \
                (stamp, f"cannot be read ({e.strerror or e})", 0o444)
        return None if got is None else (got[1], got[0], got[2])

    def alerts(self, records: list[VmRecord]) -> list[tuple[str, str, str]]:
        """IMAGE_CHANGED for each image whose last hash differs from its name (until a
        pass hashes it right again), IMAGE_MISSING for each image a present VM uses that
        is not a file in by-digest now."""
        users = self.store.users(records)
        with self._lock:
            bad = {d: (got, mode) for d, (_, got, mode) in self._last.items() if got != d}
        out = []
        for digest, (got, mode) in sorted(bad.items()):
            path = self.store.final(digest)
            if _absent(path):
                continue   # gone: IMAGE_MISSING below when a VM uses it
            writable = f" (mode {mode:04o}: writable)" if mode & 0o222 else ""
            out.append((drift.IMAGE_CHANGED, digest, f"{path} {_hashes_to(got)}{writable}; "
                                                     f"{_backed(users.get(digest, []))}"))
        present = self.store.users(r for r in records if r.state == "present")
        for digest, names in sorted(present.items()):
            path = self.store.final(digest)
            if why := _absent(path):
                out.append((drift.IMAGE_MISSING, digest, f"{path} {why}; {_backed(names)}"))
        return out


def start_images(watch: ImageWatch, interval: float, stopping: threading.Event) -> None:
    """A pass at start, then one ``interval`` seconds after each ends (0: at start only),
    in a thread that takes no host lock: hashing GiBs takes seconds, and the agent answers
    meanwhile. An image removed or pushed mid-pass is left for the next one."""

    def loop() -> None:
        while True:
            try:
                watch.run()
            except Exception:   # a failed pass must not stop the next one
                log.exception("image verification failed")
            if interval <= 0 or stopping.wait(interval):
                return
    threading.Thread(target=loop, name="verify-images", daemon=True).start()


def _absent(path: Path) -> str:
    """Why ``path`` is not an image QEMU could read ("" when it is a regular file)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "is gone"
    return "" if stat.S_ISREG(st.st_mode) else "is not a regular file"


def _hashes_to(got: str) -> str:
    return f"hashes to {got} now" if is_digest(got) else got


def _backed(names: list[str]) -> str:
    if not names:
        return "no VM backed by it"
    shown = ", ".join(names[:10]) + (f" (+{len(names) - 10} more)" if len(names) > 10 else "")
    return f"{len(names)} VM(s) backed by it: {shown}"
