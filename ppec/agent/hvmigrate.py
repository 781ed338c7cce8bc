"""libvirt's side of a live migration (the boundary, beside ``hypervisor``).

The source agent asks its libvirtd to migrate peer-to-peer: that daemon connects to the
target's libvirtd itself (``dconnuri``, the target's ``migration_uri``) and QEMU streams
memory and the overlay's blocks to the target's ``migration_address``. No byte of it
passes through the operator's SSH channel.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any

import libvirt

from ppec.agent.hypervisor import Hypervisor
from ppec.core.errors import HypervisorError

# Live, peer-to-peer, defined on the target, the overlay's own blocks copied (the base
# image is on both hosts at one path), the job aborted when the copy of a disk fails.
FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
         | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_NON_SHARED_INC
         | libvirt.VIR_MIGRATE_ABORT_ON_ERROR)


@dataclass(frozen=True)
class Request:
    name: str
    dconnuri: str           # the target's libvirtd
    address: str            # the target's data address (tcp://...), "" for libvirt's choice
    xml: str                # the destination XML (live and persistent)
    tls: bool = False
    max_downtime_ms: int = 0
    bandwidth_mib: int = 0  # MiB/s the copy may use; 0: no limit


def migratable_xml(hv: Hypervisor, name: str) -> str:
    return str(hv.call(f"dump migratable XML of {name}", lambda c: c.lookupByName(name)
                       .XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)))


def migrate(hv: Hypervisor, req: Request, timeout: float) -> dict[str, int]:
    """Run the migration; when it lasts past ``timeout`` it is aborted (MIGRATE_TIMEOUT)
    and the guest keeps running here. Returns libvirt's figures of the finished job
    (total time, downtime, bytes, passes over memory: ms and bytes)."""
    params: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_DEST_XML: req.xml,
                              libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: req.xml}
    if req.address:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = req.address
    if req.bandwidth_mib:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = req.bandwidth_mib
    flags = FLAGS | (libvirt.VIR_MIGRATE_TLS if req.tls else 0)
    expired = threading.Event()

    def run(conn: libvirt.virConnect) -> dict[str, int]:
        dom = conn.lookupByName(req.name)
        if req.max_downtime_ms:
            dom.migrateSetMaxDowntime(req.max_downtime_ms, 0)

        def expire() -> None:
            expired.set()
            with contextlib.suppress(libvirt.libvirtError):
                dom.abortJob()
        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            dom.migrateToURI3(req.dconnuri, params, flags)
        finally:
            timer.cancel()
        try:
            done = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        except libvirt.libvirtError:   # figures only: the move itself succeeded
            return {}
        keys = {"time_elapsed": "total_ms", "downtime": "downtime_ms",
                "data_processed": "bytes", "memory_iteration": "memory_passes"}
        return {ours: int(done[k]) for k, ours in keys.items() if k in done}
    try:
        return hv.call(f"migrate {req.name}", run)
    except HypervisorError as e:
        if expired.is_set():
            raise HypervisorError(f"migrating {req.name} took longer than {timeout:.0f}s; "
                                  f"aborted, the VM runs on here", code="MIGRATE_TIMEOUT",
                                  details=e.details) from None
        raise


def job(hv: Hypervisor, name: str) -> dict[str, int]:
    """The migration job's counters (empty when no job runs)."""
    def get(conn: libvirt.virConnect) -> dict[str, int]:
        try:
            stats = conn.lookupByName(name).jobStats(0)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:   # not running
                return {}
            raise
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
            return {}
        keys = ("memory_total", "memory_remaining", "memory_processed", "disk_total",
                "disk_remaining", "disk_processed", "memory_iteration", "time_elapsed",
                "downtime", "memory_dirty_rate")
        return {k: int(stats[k]) for k in keys if k in stats}
    return hv.call(f"read {name}'s job", get)


def abort(hv: Hypervisor, name: str) -> bool:
    """Abort the domain's job; False when none was running."""
    def stop(conn: libvirt.virConnect) -> bool:
        try:
            conn.lookupByName(name).abortJob()
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
                return False
            raise
        return True
    return hv.call(f"abort {name}'s job", stop)


def paused_for_migration(hv: Hypervisor, name: str) -> bool:
    """The domain is paused by a migration: a target not yet resumed, or a source at
    the switch-over."""
    def get(conn: libvirt.virConnect) -> bool:
        state, reason = conn.lookupByName(name).state(0)
        return bool(state == libvirt.VIR_DOMAIN_PAUSED and reason in (
            libvirt.VIR_DOMAIN_PAUSED_MIGRATION, libvirt.VIR_DOMAIN_PAUSED_STARTING_UP))
    return hv.call(f"read {name}'s state", get)


def runs_at(uri: str, uuid: str) -> bool | None:
    """Whether the guest ``uuid`` runs (not paused for an incoming migration) on the
    libvirtd at ``uri``; None when that daemon cannot be asked."""
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return None
    try:
        try:
            dom = conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            return None
        state, _ = dom.state(0)
        return bool(state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED))
    except libvirt.libvirtError:
        return None
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()
