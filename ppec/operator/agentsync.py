"""Keep every host's agent at the operator's version: compare files by checksum, send
what differs, let the agent swap and restart itself (its VMs keep running)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import ppec
from ppec.core.errors import LockBusy, PpecError, TransportError
from ppec.operator.context import Context
from ppec.operator.fleet.client import fan_out
from ppec.operator.store import Host
from ppec.wire import bundle as files

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


def compare(ctx: Context, host: Host, want: Desired) -> tuple[HostSync, dict[str, Any]]:
    """What differs on ``host`` (state current or outdated), and its agent's answer."""
    try:
        theirs = ctx.client(host).call("agent.manifest")
    except PpecError as e:
        if e.code == "UNKNOWN_METHOD":
            raise PpecError(f"this agent predates self-update; install ppec "
                            f"{want.version} on {host.name} by hand once",
                            code="AGENT_TOO_OLD") from None
        raise
    if theirs["digest"] == want.digest:
        return HostSync(host.name, "current", theirs["version"], want.version), theirs
    changed = sorted(n for n, sha in want.manifest.items() if theirs["files"].get(n) != sha)
    removed = sorted(n for n in theirs["files"] if n not in want.manifest)
    return HostSync(host.name, "outdated", theirs["version"], want.version, changed,
                    removed), theirs


def sync_host(ctx: Context, host: Host, want: Desired, *, dry_run: bool = False,
              approval: dict[str, Any] | None = None) -> HostSync:
    result, theirs = compare(ctx, host, want)
    if dry_run or result.state == "current":
        return result
    client = ctx.client(host)
    client.call("agent.update", approval=approval, version=want.version,
                manifest=want.manifest, digest=want.digest,
                bundle=files.pack(files.package_root(), result.changed))
    client.close()   # the agent restarts: the next call must connect afresh
    # Done only when a *new* process (another boot id) runs the desired files: the old
    # one may still answer for a moment, and the files on disk prove nothing by themselves.
    deadline = time.monotonic() + COME_BACK_S
    while True:
        try:
            now = client.call("agent.manifest")
            if now.get("boot_id") != theirs.get("boot_id"):
                if now["digest"] != want.digest:
                    raise PpecError(f"the agent restarted with other files (digest "
                                    f"{now['digest'][:12]}, wanted {want.digest[:12]})",
                                    code="UPDATE_MISMATCH")
                result.state = "updated"
                return result
        except (TransportError, LockBusy):
            client.close()
        if time.monotonic() > deadline:
            raise PpecError(f"the agent took the update but did not come back within "
                            f"{COME_BACK_S:.0f} s; check `ppec-agent` on {host.name}",
                            code="AGENT_GONE")
        time.sleep(0.2)


def _failed(host: str, e: PpecError | None) -> HostSync:
    assert e is not None
    return HostSync(host, "failed", error=e.message, code=e.code)


def sync(ctx: Context, names: list[str], dry_run: bool = False) -> list[HostSync]:
    """Compare every host; then update one outdated host first (a canary) and, only if it
    comes back on the new files, the others in parallel: a bad release stops at one host."""
    hosts = [ctx.store.host(n) for n in names] if names else ctx.store.hosts()
    want = Desired.here()
    found = {r.host: (r.value[0] if r.ok else _failed(r.host, r.error))
             for r in fan_out(hosts, lambda h: compare(ctx, h, want))}
    outdated = [h for h in hosts if found[h.name].state == "outdated"]
    if dry_run or not outdated:
        return [found[h.name] for h in hosts]

    def update(host: Host) -> HostSync:
        return sync_host(ctx, host, want)

    canary, rest = outdated[0], outdated[1:]
    first = fan_out([canary], update)[0]
    found[canary.name] = first.value if first.ok else _failed(canary.name, first.error)
    if not first.ok:
        for h in rest:
            found[h.name] = HostSync(h.name, "failed", found[h.name].version, want.version,
                                     found[h.name].changed, found[h.name].removed,
                                     error=f"not tried: the first host ({canary.name}) "
                                           f"failed", code="CANARY_FAILED")
        return [found[h.name] for h in hosts]
    for r in fan_out(rest, update):
        found[r.host] = r.value if r.ok else _failed(r.host, r.error)
    return [found[h.name] for h in hosts]
