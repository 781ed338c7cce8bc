"""Keep every host's agent at the operator's version: compare files by checksum, send
what differs, let the agent swap and restart itself (its VMs keep running)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import ppec
from ppec.agent import files
from ppec.context import Context
from ppec.errors import PpecError, TransportError
from ppec.fleet.client import fan_out
from ppec.store import Host

COME_BACK_S = 60.0   # how long an updated agent may take to serve again


@dataclass
class Desired:
    version: str
    manifest: dict[str, str]
    digest: str

    @classmethod
    def here(cls) -> Desired:
        """The operator's own installed ppec: the version this CLI speaks."""
        found = files.manifest(files.package_root())
        return cls(ppec.__version__, found, files.digest(ppec.__version__, found))


@dataclass
class HostSync:
    host: str
    state: str                   # current | outdated (dry run) | updated | failed
    version: str = ""            # the agent's version before
    to: str = ""
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    error: str = ""
    code: str = ""


def sync_host(ctx: Context, host: Host, want: Desired, *, dry_run: bool = False,
              approval: dict[str, Any] | None = None) -> HostSync:
    client = ctx.client(host)
    try:
        theirs = client.call("agent.manifest")
    except PpecError as e:
        if e.code == "UNKNOWN_METHOD":
            raise PpecError(f"this agent predates self-update; install ppec "
                            f"{want.version} on {host.name} by hand once",
                            code="AGENT_TOO_OLD") from None
        raise
    if theirs["digest"] == want.digest:
        return HostSync(host.name, "current", theirs["version"], want.version)
    changed = sorted(n for n, sha in want.manifest.items() if theirs["files"].get(n) != sha)
    removed = sorted(n for n in theirs["files"] if n not in want.manifest)
    result = HostSync(host.name, "outdated", theirs["version"], want.version, changed, removed)
    if dry_run:
        return result
    client.call("agent.update", approval=approval, version=want.version,
                manifest=want.manifest, digest=want.digest,
                bundle=files.pack(files.package_root(), changed))
    client.close()   # the agent restarts: the next call must connect afresh
    deadline = time.monotonic() + COME_BACK_S
    while True:
        try:
            now = client.call("agent.manifest")
            if now["digest"] != want.digest:
                raise PpecError(f"the agent restarted with other files (digest "
                                f"{now['digest'][:12]}, wanted {want.digest[:12]})",
                                code="UPDATE_MISMATCH")
            result.state = "updated"
            return result
        except TransportError:
            if time.monotonic() > deadline:
                raise PpecError(f"the agent took the update but did not come back within "
                                f"{COME_BACK_S:.0f} s; check `ppec-agent` on {host.name}",
                                code="AGENT_GONE") from None
            time.sleep(0.2)


def sync(ctx: Context, names: list[str], dry_run: bool = False) -> list[HostSync]:
    hosts = [ctx.store.host(n) for n in names] if names else ctx.store.hosts()
    want = Desired.here()
    out = []
    for r in fan_out(hosts, lambda h: sync_host(ctx, h, want, dry_run=dry_run)):
        if r.ok:
            out.append(r.value)
        else:
            assert r.error is not None
            out.append(HostSync(r.host, "failed", error=r.error.message, code=r.error.code))
    return out
