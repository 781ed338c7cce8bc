"""The agent's own files: what this process runs, and swapping in the operator's."""

from __future__ import annotations

import sys
from typing import Any

import ppec
from ppec.agent import files
from ppec.agent.context import AgentContext
from ppec.core.errors import BadInput, Conflict
from ppec.wire import bundle as pkgfiles


class UpdateHandlers:
    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx

    def manifest(self) -> dict[str, Any]:
        """The files this process started with (not what is on disk now)."""
        return {"host": self.ctx.host, "version": ppec.__version__,
                "root": str(pkgfiles.package_root()), "files": self.ctx.running,
                "digest": pkgfiles.digest(ppec.__version__, self.ctx.running),
                "boot_id": self.ctx.boot_id}

    def apply(self, version: str, manifest: dict[str, Any], bundle: str,
              digest: str) -> dict[str, Any]:
        """Swap in the operator's files (under the host lock: no VM change is half-done),
        then restart on them; running VMs are libvirtd's and are not touched."""
        if pkgfiles.digest(version, manifest) != digest:
            raise BadInput("the manifest does not match its digest", code="BAD_UPDATE")
        if self.ctx.in_flight:
            raise Conflict("a disk detach is waiting for its guest; update after it ends",
                           code="BUSY")
        if self.ctx.restart_requested:
            raise Conflict("an update is already in place; the agent is restarting",
                           code="BUSY")
        result = files.apply(pkgfiles.package_root(), version, manifest, bundle, sys.executable)
        self.ctx.restart_requested = True
        return {"host": self.ctx.host, "from": ppec.__version__, **result,
                "restarting": True}
