"""Base images by digest: what the host has, an upload as a byte stream, removal.

Only ``image.remove`` takes the host lock (it must not race a create that names the
image); status, list and upload do not, so a push of GiBs never holds up the host.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ppec.agent.context import AgentContext
from ppec.agent.images import ImageStore, Upload
from ppec.core.errors import Conflict, NotFound


class ImageHandlers:
    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self.store = ImageStore.of(ctx.config)

    def status(self, digest: str) -> dict[str, Any]:
        final = self.store.final(digest)
        size = self.store.size_of(final)
        return {"digest": digest, "have": size is not None, "path": str(final),
                "partial": self.store.size_of(self.store.partial(digest)) or 0,
                "size": size}

    def upload(self, digest: str, size: int, offset: int) -> dict[str, Any]:
        """``{"have": true, …}`` when the image is here already (nothing to send); else
        ``{"stream": "image", "digest", "offset"}`` and the connection becomes the byte
        stream of the rest of the image (``ppec.agent.images.Upload``)."""
        store = self.store
        if (have := self._have(digest)) is not None:
            return have
        lock = store.lock(digest)
        try:
            if (have := self._have(digest)) is not None:   # finished while we asked
                lock.release()
                return have
            fd = store.open_partial(digest, size, offset)
        except BaseException:
            lock.release()
            raise
        return Upload(store, digest, size, offset, fd, lock)

    def _have(self, digest: str) -> dict[str, Any] | None:
        final = self.store.final(digest)
        size = self.store.size_of(final)
        return None if size is None else \
            {"digest": digest, "have": True, "path": str(final), "size": size}

    def list_all(self) -> dict[str, Any]:
        return {"images": [{"digest": d, "size": size, "path": str(self.store.final(d)),
                            "vms": self._users(self.store.final(d))}
                           for d, size in self.store.images()],
                "partial": [{"digest": d, "bytes": n} for d, n in self.store.partials()]}

    def _users(self, final: Path) -> list[str]:
        """VMs whose disks are backed by this image: libvirt's view of every domain (a
        running one's backing chain), and the ledger's (a stopped VM's XML names only its
        overlay)."""
        real = os.path.realpath(final)
        users = {name for name, _ in self.ctx.hv.disk_users(real)}
        # The ledger names an image by its path or, built from the catalogue, by
        # "sha256:DIGEST" (its document's image, kernel or initrd).
        users |= set(self.store.users(self.ctx.ledger.all()).get(final.name, []))
        return sorted(users)

    def remove(self, digest: str) -> dict[str, Any]:
        store = self.store
        final = store.final(digest)
        if not final.exists() and not store.partial(digest).exists():
            raise NotFound(f"no image {digest} on {self.ctx.host}")
        if final.exists() and (users := self._users(final)):
            raise Conflict(f"image {digest} is in use on {self.ctx.host} by VM(s) "
                           f"{', '.join(users)}; delete them first", code="IMAGE_IN_USE",
                           details={"vms": users})
        with store.held(digest):
            store.remove(digest)
        return {"digest": digest, "removed": True}
