"""Moving a running VM to another host (issue 26; docs/migration.md for every step).

The CLI orchestrates, the agents act, libvirt copies: the source describes the VM, the
target claims what it needs under its lock and answers the destination XML (its own
pins), the source's libvirtd migrates peer-to-peer, then the target takes the VM and the
source lets it go. The store points at the target only after both. A run cut anywhere is
finished by the next ``vm migrate`` of the VM (or by the agents' own settling): each side
asks libvirt where the guest runs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ppec.core.errors import Conflict, PpecError
from ppec.operator import migtarget
from ppec.operator.context import Context, agent_client
from ppec.operator.fleet.client import AgentClient
from ppec.operator.store import Host

Progress = Callable[[dict[str, Any]], None]
POLL = 0.5          # seconds between progress reads
WAIT_MARGIN = 300   # a claim waits this much longer than the migration may take


@dataclass(frozen=True)
class MoveAsk:
    name: str
    to: str = ""                 # "": placement chooses
    max_downtime_ms: int = 0     # 0: libvirt's default (300 ms)
    bandwidth_mib: int = 0       # MiB/s the copy may use; 0: no limit
    timeout: int = 600


def migrate(ctx: Context, ask: MoveAsk, progress: Progress | None = None,
            approval: dict[str, Any] | None = None) -> dict[str, Any]:
    """Move ``ask.name``; the result names the new host. Ctrl-C aborts (the VM stays)."""
    done = finish_earlier(ctx, ask.name, progress)
    if done is not None:
        return done
    row = ctx.store.vm(ask.name)
    source = ctx.store.host(row.host)
    src = ctx.client(source)
    info = src.call("vm.migrate_info", name=ask.name)
    target = migtarget.choose_target(ctx, row, info, ask.to)
    tgt = ctx.client(target)
    ctx.store.set_vm(ask.name, state="migrating", moving_to=target.name)
    try:
        claim = tgt.call("vm.incoming", name=ask.name, document=info["document"],
                         uuid=info["uuid"], created_at=info["created_at"], xml=info["xml"],
                         source=source.name, disks=info["disks"], seed=info["seed"],
                         wait=ask.timeout + WAIT_MARGIN)
    except PpecError:
        _stayed(ctx, ask.name)
        raise
    try:
        with _watching(ctx, source, ask.name, progress):
            copied = src.call("vm.migrate", approval=approval, name=ask.name, target=target.name,
                     uri=claim["uri"], xml=claim["xml"], address=claim["address"],
                     tls=claim["tls"], max_downtime=ask.max_downtime_ms,
                     bandwidth=ask.bandwidth_mib, timeout=ask.timeout)
    except BaseException as e:
        where = _after_failure(ctx, ask.name, source, target, interrupted=not isinstance(
            e, PpecError))
        if where != "target":
            raise
        copied = {}
    figures = {k: copied[k] for k in ("total_ms", "downtime_ms", "bytes", "memory_passes")
               if k in copied}
    return {**_commit(ctx, ask.name, source, target, claim), **figures}


def _after_failure(ctx: Context, name: str, source: Host, target: Host,
                   interrupted: bool) -> str:
    """After an error or Ctrl-C: abort what may still run, then settle both sides.
    Returns where the guest is ("source" or "target")."""
    src = agent_client(source, ctx.reach)   # the cached connection may be mid-call
    try:
        if interrupted:
            src.call("vm.migrate_abort", name=name)
        where = _settled_source(ctx, src, name, None)
    finally:
        src.close()
    if where != "target":
        _stayed(ctx, name, target)
    return where


def _commit(ctx: Context, name: str, source: Host, target: Host,
            claim: dict[str, Any]) -> dict[str, Any]:
    """Ownership, in order: the target's ledger takes the VM, the source forgets it, the
    store follows."""
    taken = ctx.client(target).call("vm.incoming_settle", name=name)
    if taken["state"] != "present":
        raise Conflict(f"{name} was copied to {target.name} but its agent reports "
                       f"{taken['state']}; run `ppec vm migrate {name}` again to settle it",
                       code="MIGRATE_UNSETTLED")
    gone = ctx.client(source).call("vm.migrate_settle", name=name)
    _moved(ctx, name, target)
    return {"name": name, "from": source.name, "host": target.name,
            "cpus": claim.get("cpus", []), "source_state": gone["state"]}


def _moved(ctx: Context, name: str, target: Host) -> None:
    """The store follows the VM to ``target`` (and its HA member to its key there)."""
    ctx.store.move_vm(name, target.name, migtarget.spread_key(ctx, name, target))
    ctx.store.set_vm(name, state="running", moving_to=None)


def _stayed(ctx: Context, name: str, target: Host | None = None) -> None:
    """The VM stays on its source: the target's claim (if one was made) is given up and
    the store forgets the move."""
    if target is not None:
        ctx.client(target).call("vm.incoming_settle", name=name, abandon=True)
    ctx.store.set_vm(name, state="running", moving_to=None)


def finish_earlier(ctx: Context, name: str, progress: Progress | None
                   ) -> dict[str, Any] | None:
    """A move an earlier run left (CLI killed, link cut): settled both sides. Returns the
    result when the VM had already moved, None when it is (again) on its source."""
    row = ctx.store.vm(name)
    moving_to = ctx.store.vm_move(name)   # set with state migrating, cleared with it
    if not moving_to:
        return None
    source, target = ctx.store.host(row.host), ctx.store.host(moving_to)
    where = _settled_source(ctx, ctx.client(source), name, progress)
    if where == "target" and \
            ctx.client(target).call("vm.incoming_settle", name=name)["state"] == "present":
        _moved(ctx, name, target)
        return {"name": name, "from": source.name, "host": target.name,
                "note": "an earlier run had moved it; settled"}
    _stayed(ctx, name, target)
    return None


def _settled_source(ctx: Context, client: AgentClient, name: str,
                    progress: Progress | None) -> str:
    """Where the guest is by the source's settle ("source", "target"), waiting while a
    migration still runs there."""
    while True:
        try:
            state = client.call("vm.migrate_settle", name=name)["state"]
        except PpecError as e:
            if e.code != "NOT_FOUND":
                raise
            state = "none"
        if state == "moving":
            if progress is not None:
                with contextlib.suppress(PpecError):   # it may end between the two calls
                    progress(client.call("vm.migrate_job", name=name))
            time.sleep(POLL)
            continue
        if state == "unknown":
            raise Conflict(f"cannot tell where {name} runs: its source cannot ask the "
                           f"target's libvirt; try again when both hosts answer",
                           code="MIGRATE_UNSETTLED")
        return "target" if state in ("target", "none") else "source"


@contextmanager
def _watching(ctx: Context, host: Host, name: str, progress: Progress | None
              ) -> Iterator[None]:
    """Read the job's progress on a connection of its own while the migration runs."""
    if progress is None:
        yield
        return
    stop = threading.Event()

    def poll() -> None:
        client = agent_client(host, ctx.reach)
        try:
            while not stop.wait(POLL):
                try:
                    job = client.call("vm.migrate_job", name=name)
                except PpecError:
                    continue
                if job.get("job"):
                    progress(job)
        finally:
            client.close()
    thread = threading.Thread(target=poll, name="migrate-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
