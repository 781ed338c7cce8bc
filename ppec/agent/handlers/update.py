"""The agent's own files: what this process runs, swapping in the operator's, and going
back to the previous accepted release. Both paths stage, check and exchange the same way
(``ppec.agent.files``); the daemon then re-executes, watched by the old code."""

from __future__ import annotations

import os
import sys
from typing import Any

import ppec
from ppec.agent import files
from ppec.agent.context import AgentContext
from ppec.agent.fault import checkpoint
from ppec.agent.releases import Releases
from ppec.core.errors import BadInput, Conflict
from ppec.wire import bundle as pkgfiles


class UpdateHandlers:
    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self.releases = Releases(ctx.config.state_dir, pkgfiles.package_root().name)

    def manifest(self) -> dict[str, Any]:
        """The files this process started with (not what is on disk now), and the
        releases kept on the host."""
        p = self.releases.pointer()
        return {"host": self.ctx.host, "version": ppec.__version__,
                "root": str(pkgfiles.package_root()), "files": self.ctx.running,
                "digest": self.ctx.digest, "boot_id": self.ctx.boot_id, "pid": os.getpid(),
                "release": {"current": p.current, "previous": p.previous,
                            "failed": p.failed},
                "files_changed": [d for _, _, d in self.ctx.file_alerts]}

    def _check_idle(self) -> None:
        if self.ctx.in_flight:
            raise Conflict("a disk detach is waiting for its guest; update after it ends",
                           code="BUSY")
        if self.ctx.restart_requested:
            raise Conflict("an update is already in place; the agent is restarting",
                           code="BUSY")

    def apply(self, version: str, manifest: dict[str, Any], bundle: str, digest: str,
              allow_downgrade: bool = False) -> dict[str, Any]:
        """Swap in the operator's files (under the host lock: no VM change is half-done),
        then restart on them; running VMs are libvirtd's and are not touched."""
        if pkgfiles.digest(version, manifest) != digest:
            raise BadInput("the manifest does not match its digest", code="BAD_UPDATE")
        self._check_idle()
        if not allow_downgrade and \
                pkgfiles.version_key(version) < pkgfiles.version_key(ppec.__version__):
            raise Conflict(f"ppec {version} is older than the running {ppec.__version__}; "
                           f"refused without --allow-downgrade", code="DOWNGRADE")
        contents = files.from_bundle(pkgfiles.package_root(), manifest, bundle)
        checkpoint(self.ctx.config, "checked")
        return self._switch(version, manifest, contents, digest)

    def rollback(self, to: str, current: str) -> dict[str, Any]:
        """Go back to the previous accepted release (kept on the host: no bundle)."""
        self._check_idle()
        p = self.releases.pointer()
        if current != self.ctx.digest:
            raise Conflict(f"the agent runs {self.ctx.digest[:12]}, the rollback names "
                           f"{current[:12]}", code="ROLLBACK_MISMATCH")
        if not p.previous or not self.releases.has(p.previous):
            raise Conflict("no previous release kept on this host", code="NO_PREVIOUS")
        if to != p.previous:
            raise Conflict(f"the previous release here is {p.previous[:12]}, the rollback "
                           f"names {to[:12]}", code="ROLLBACK_MISMATCH")
        info = self.releases.info(to)
        contents = self.releases.contents(to)
        checkpoint(self.ctx.config, "checked")
        return self._switch(str(info["version"]), dict(info["files"]), contents, to)

    def _switch(self, version: str, manifest: dict[str, str], contents: dict[str, bytes],
                digest: str) -> dict[str, Any]:
        """Keep the release, exchange it in, point at it; the restart is watched."""
        config = self.ctx.config
        self.releases.store(version, manifest, contents)
        checkpoint(config, "stored")
        result = files.install(pkgfiles.package_root(), manifest, contents, sys.executable,
                               lambda step: checkpoint(config, step))
        p = self.releases.pointer()
        # The way back is what runs now (when it is a kept release; after drift it is not).
        old = self.ctx.digest if self.releases.has(self.ctx.digest) else p.current
        p.previous, p.current = (old if old != digest else p.previous), digest
        self.releases.save(p)
        checkpoint(config, "recorded")
        self.releases.prune()
        self.ctx.restart_requested = True
        self.ctx.after_restart = {"digest": digest, "version": version, "previous": old,
                                  "boot_id": self.ctx.boot_id}
        return {"host": self.ctx.host, "from": ppec.__version__, "version": version,
                "digest": digest, "previous": old, **result, "restarting": True}
