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
    state: str   # current | outdated (dry run) | updated | failed | not tried | rolled back
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
              approval: dict[str, Any] | None = None,
              allow_downgrade: bool = False) -> HostSync:
    result, theirs = compare(ctx, host, want)
    if dry_run or result.state == "current":
        return result
    client = ctx.client(host)
    params: dict[str, Any] = {"version": want.version, "manifest": want.manifest,
                              "digest": want.digest,
                              "bundle": files.pack(files.package_root(), result.changed)}
    if allow_downgrade:   # only when asked: an older agent may not know the parameter
        params["allow_downgrade"] = True
    client.call("agent.update", approval=approval, **params)
    client.close()   # the agent restarts: the next call must connect afresh
    wait_back(ctx, host, theirs, want.digest)
    result.state = "updated"
    return result


def wait_back(ctx: Context, host: Host, before: dict[str, Any], want: str) -> dict[str, Any]:
    """Until a *new* process (another boot id) answers: the old one may still answer for
    a moment, and the files on disk prove nothing by themselves. Its digest must be
    ``want``; a release the host rolled back by itself is ROLLED_BACK."""
    client = ctx.client(host)
    deadline = time.monotonic() + COME_BACK_S
    while True:
        try:
            now: dict[str, Any] = client.call("agent.manifest")
            if now.get("boot_id") != before.get("boot_id"):
                if now["digest"] == want:
                    return now
                failed = {f.get("digest"): f for f in now.get("release", {}).get("failed", [])}
                if want in failed:
                    raise PpecError(f"release {want[:12]} failed its health check on "
                                    f"{host.name} ({failed[want].get('why', '')}); the host "
                                    f"rolled back to {now['digest'][:12]}",
                                    code="ROLLED_BACK")
                raise PpecError(f"the agent restarted with other files (digest "
                                f"{now['digest'][:12]}, wanted {want[:12]})",
                                code="UPDATE_MISMATCH")
        except (TransportError, LockBusy):
            client.close()
        if time.monotonic() > deadline:
            raise PpecError(f"the agent took the change but did not come back within "
                            f"{COME_BACK_S:.0f} s; check `ppec-agent` on {host.name}",
                            code="AGENT_GONE")
        time.sleep(0.2)


def _failed(host: str, e: PpecError | None) -> HostSync:
    assert e is not None
    return HostSync(host, "failed", error=e.message, code=e.code)


def sync(ctx: Context, names: list[str], dry_run: bool = False, *, canary: int = 1,
         max_parallel: int = 32, allow_downgrade: bool = False) -> list[HostSync]:
    """Compare every host; then update ``canary`` outdated hosts first and, only if every
    one comes back on the new files, the others (at most ``max_parallel`` at once): a bad
    release stops at the canaries; the rest are "not tried"."""
    hosts = [ctx.store.host(n) for n in names] if names else ctx.store.hosts()
    want = Desired.here()
    found = {r.host: (r.value[0] if r.ok else _failed(r.host, r.error))
             for r in fan_out(hosts, lambda h: compare(ctx, h, want), max_parallel)}
    outdated = [h for h in hosts if found[h.name].state == "outdated"]
    if dry_run or not outdated:
        return [found[h.name] for h in hosts]

    def update(host: Host) -> HostSync:
        return sync_host(ctx, host, want, allow_downgrade=allow_downgrade)

    first, rest = outdated[:max(canary, 1)], outdated[max(canary, 1):]
    for r in fan_out(first, update, max_parallel):
        found[r.host] = r.value if r.ok else _failed(r.host, r.error)
    bad = [h.name for h in first if found[h.name].state == "failed"]
    if bad:
        for h in rest:
            was = found[h.name]
            found[h.name] = HostSync(h.name, "not tried", was.version, want.version,
                                     was.changed, was.removed,
                                     error=f"not tried: canary {', '.join(bad)} failed",
                                     code="CANARY_FAILED")
        return [found[h.name] for h in hosts]
    for r in fan_out(rest, update, max_parallel):
        found[r.host] = r.value if r.ok else _failed(r.host, r.error)
    return [found[h.name] for h in hosts]


def rollback_host(ctx: Context, host: Host, *, approval: dict[str, Any] | None = None,
                  expect: tuple[str, str] | None = None) -> HostSync:
    """Back to the previous release kept on ``host``; ``expect`` (to, current) is what an
    approval named: nothing else is rolled back."""
    theirs: dict[str, Any] = ctx.client(host).call("agent.manifest")
    release = theirs.get("release", {})
    to, current = str(release.get("previous", "")), str(theirs["digest"])
    if not to:
        raise PpecError(f"{host.name} keeps no previous release", code="NO_PREVIOUS")
    if expect is not None and expect != (to, current):
        raise PpecError(f"{host.name} now runs {current[:12]} with previous {to[:12]}, "
                        f"not what the request names", code="ROLLBACK_MISMATCH")
    client = ctx.client(host)
    client.call("agent.rollback", approval=approval, to=to, current=current)
    client.close()
    now = wait_back(ctx, host, theirs, to)
    return HostSync(host.name, "rolled back", theirs["version"], str(now["version"]))


def previous_of(ctx: Context, host: Host) -> tuple[str, str, str]:
    """(to, current, agent's own name) for a rollback request."""
    theirs: dict[str, Any] = ctx.client(host).call("agent.manifest")
    to = str(theirs.get("release", {}).get("previous", ""))
    if not to:
        raise PpecError(f"{host.name} keeps no previous release", code="NO_PREVIOUS")
    return to, str(theirs["digest"]), str(theirs["host"])


def rollback(ctx: Context, names: list[str], max_parallel: int = 32) -> list[HostSync]:
    hosts = [ctx.store.host(n) for n in names] if names else ctx.store.hosts()
    return [r.value if r.ok else _failed(r.host, r.error)
            for r in fan_out(hosts, lambda h: rollback_host(ctx, h), max_parallel)]
