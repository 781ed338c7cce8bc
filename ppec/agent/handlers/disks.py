"""Data disks: attach, list and detach on a VM, live and persistent, never losing a volume.

Every step is written to the ledger before it happens, so a crash anywhere is resolved at
start-up (``Volumes.recover``):

    attach:  row 'attaching' -> make volume -> libvirt attach (config + live) -> 'attached'
    detach:  row 'detaching' -> remove from config -> ask the guest (live) and wait for
             libvirt's device-removed event -> delete volume -> row gone
             (guest too slow: row 'detach-pending', volume kept; resolved later)

A volume is deleted only after libvirt confirms the guest no longer has the disk. Volumes
ppec made (``--size``) are deleted on detach unless kept; volumes attached with ``--path``
belong to whoever made them and are always kept. All three run under the host lock.
"""

from __future__ import annotations

import logging
import secrets
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from ppec.agent import domxml, storage, tuning
from ppec.agent.context import AgentContext
from ppec.agent.hypervisor import Domain
from ppec.agent.ledger import DiskRecord, VmRecord
from ppec.agent.volumes import Volumes
from ppec.core.clock import utc_now
from ppec.core.errors import BadInput, Conflict, DetachPending, LockBusy, NotFound, PpecError

log = logging.getLogger(__name__)


class DiskHandlers:
    def __init__(self, ctx: AgentContext, volumes: Volumes) -> None:
        self.ctx = ctx
        self.volumes = volumes

    def list_all(self, name: str) -> dict[str, Any]:
        dom, rec = self.ctx.owned(name)
        notes = self.volumes.settle_vm(name, dom)
        live, config = self.volumes.xml_disks(name, dom)
        rows = {d.target: d for d in self.ctx.ledger.disks(name)}
        out = []
        for target in sorted({d.target for d in live + config} | set(rows),
                             key=lambda t: (t[:2], len(t), t)):
            in_live = next((d for d in live if d.target == target), None)
            in_config = next((d for d in config if d.target == target), None)
            out.append(self._row_view(rec, target, rows.get(target), in_live, in_config))
        return {"vm": name, "host": self.ctx.host, "disks": out, "resolved": notes}

    def _row_view(self, rec: VmRecord, target: str, row: DiskRecord | None,
                  in_live: domxml.DiskInfo | None, in_config: domxml.DiskInfo | None
                  ) -> dict[str, Any]:
        info = in_live or in_config
        path = row.path if row else (info.path if info else "")
        if row is not None:
            kind, size, state = "data", row.bytes, row.state
        elif path == rec.disk_path:
            kind, size, state = "root", rec.disk_bytes, "attached"
        elif path == str(self.ctx.seed_path(rec.name)):
            kind, size, state = "seed", 0, "attached"
        else:
            kind, size, state = "foreign", 0, "attached"
        return {"target": target, "bus": row.bus if row else (info.bus if info else ""),
                "path": path, "size_bytes": size, "kind": kind, "state": state,
                "live": in_live is not None, "persistent": in_config is not None,
                "volume": ("ppec" if row.owned else "path") if row else kind,
                "serial": info.serial if info else ""}

    # -- attach -----------------------------------------------------------------------------

    def attach(self, name: str, size_bytes: int = 0, path: str = "",
               bus: str = "virtio") -> dict[str, Any]:
        if bool(size_bytes) == bool(path):
            raise BadInput("give either a size (a new volume) or a path (an existing "
                           "volume), not both or neither")
        dom, rec = self.ctx.owned(name)
        if dom is None:
            raise Conflict(f"VM {name} is in the ledger but libvirt has no such domain",
                           code="MISSING")
        if rec.state != "present":
            raise Conflict(f"VM {name} is {rec.state}; try again when it is present",
                           code="BUSY")
        self.volumes.settle_vm(name, dom)
        target = self.volumes.free_target(name, dom, bus)
        if path:
            # From here on the resolved path: what was checked is what libvirt gets.
            fmt, size, path = self.volumes.check_existing(path)
        else:
            self.volumes.check_quota(size_bytes)
            storage.check_space(self.ctx.storage_dir, size_bytes)
            fmt, size = "qcow2", size_bytes
            path = str(self.ctx.storage_dir / f"{name}-{target}-{secrets.token_hex(3)}.qcow2")
        disk = DiskRecord(vm=name, target=target, path=path, bytes=size, bus=bus, format=fmt,
                          owned=bool(size_bytes), keep=False, state="attaching",
                          created_at=utc_now())
        self.ctx.ledger.begin_attach(disk)
        self._attach_steps(disk, dom)
        self.ctx.ledger.set_disk(name, target, "attached")
        return {"vm": name, "host": self.ctx.host, "target": target, "path": path,
                "size_bytes": size, "bus": bus, "format": fmt, "serial": f"ppec-{target}",
                "live": dom.active, "persistent": True,
                "volume": "ppec" if disk.owned else "path"}

    def _attach_steps(self, disk: DiskRecord, dom: Domain) -> None:
        """Make the volume and attach it; on failure undo what is safe to undo."""
        name, target, path = disk.vm, disk.target, disk.path
        step, made = "create volume", False
        try:
            if disk.owned:
                storage.create_volume(Path(path), disk.bytes)
                made = True
            if disk.bus == "scsi":
                step = "add SCSI controller"
                self._ensure_scsi_controller(name, dom)
            step = "attach"
            # the VM's own settings: its I/O thread if it was built with one (older
            # domains have none, and a disk naming a missing thread is refused)
            live = ET.fromstring(self.ctx.hv.xml(name, inactive=not dom.active))
            self.ctx.hv.attach_device(name, ET.tostring(domxml.disk_element(
                path, target, disk.format, disk.bus, serial=f"ppec-{target}",
                tune=self.ctx.disk_tuning, iothread=tuning.has_iothread(live)),
                encoding="unicode"))
        except Exception as e:
            if step == "attach" and self._maybe_attached(disk):
                # libvirt may have attached it before the call failed (a connection lost
                # mid-call): never delete what a guest may have. Settled by the next
                # list/attach/detach of this VM, or at restart.
                log.warning("attach %s to %s failed (%s) and libvirt's view is unclear; "
                            "kept as 'attaching' for the next check", target, name, e)
                raise PpecError(f"attach to {name}: {e}; whether {target} was attached is "
                                f"unknown: `ppec disk list {name}` settles it",
                                code="OUTCOME_UNKNOWN") from None
            log.warning("attach %s to %s failed at %s: %s; undoing", target, name, step, e)
            if made:
                storage.remove_volume(Path(path), self.ctx.storage_dir)
            self.ctx.ledger.remove_disk(name, target)
            if not isinstance(e, PpecError):
                raise PpecError(f"attach to {name} failed at step '{step}': {e}",
                                details={"step": step}) from None
            e.message = f"attach to {name} failed at step '{step}': {e.message}"
            e.details["step"] = step
            raise

    def _maybe_attached(self, disk: DiskRecord) -> bool:
        """After a failed attach call: is the disk in libvirt anyway (or can we not tell)?"""
        try:
            saved, live = self.volumes.where(disk, self.ctx.hv.find(disk.vm))
        except PpecError:
            return True
        return saved or live

    def _ensure_scsi_controller(self, name: str, dom: Domain) -> None:
        root = ET.fromstring(self.ctx.hv.xml(name, inactive=not dom.active))
        if not domxml.has_scsi_controller(root):
            controller = domxml.scsi_controller_element()
            if tuning.has_iothread(root):   # virtio-scsi: the controller has the thread
                ET.SubElement(controller, "driver", iothread=tuning.IOTHREAD)
            self.ctx.hv.attach_device(name, ET.tostring(controller, encoding="unicode"))

    # -- detach -----------------------------------------------------------------------------

    def detach(self, name: str, target: str, timeout: int = 20,
               keep_volume: bool = False, path: str = "") -> dict[str, Any]:
        """``path``, when given, must be the disk's volume: an approved request names the
        volume it approved, so a later disk under the same target name is not it."""
        dom, rec = self.ctx.owned(name)
        ledger = self.ctx.ledger
        before = next((d for d in ledger.disks(name) if d.target == target), None)
        self.volumes.settle_vm(name, dom)
        disk = next((d for d in ledger.disks(name) if d.target == target), None)
        if disk is None and before is not None:
            # A pending detach the guest (or a power-off) had completed: finished just now.
            return self.volumes.detached(before, before.keep)
        if disk is None:
            raise self._not_ours(name, target, rec, dom)
        if path and path != disk.path:
            raise Conflict(f"disk {target} of {name} is now {disk.path}, not {path} (the "
                           f"volume the request named)", code="DISK_CHANGED")
        if (name, target) in self.ctx.in_flight:
            raise Conflict(f"a detach of {target} from {name} is already waiting for the "
                           f"guest; see `ppec disk list {name}`", code="BUSY")
        keep = keep_volume or disk.keep   # once asked to keep, a volume is never deleted
        ledger.set_disk(name, target, "detaching", keep=keep)
        if dom is not None:
            early = self._detach_from_domain(disk, dom, timeout, keep)
            if early is not None:
                return early
        return self.volumes.finish_detach(disk, keep)

    def _not_ours(self, name: str, target: str, rec: VmRecord, dom: Domain | None
                  ) -> PpecError:
        """Why a disk with no ledger row cannot be detached."""
        live, config = self.volumes.xml_disks(name, dom)
        known = next((d for d in live + config if d.target == target), None)
        if known is None:
            return NotFound(f"VM {name} has no disk {target} (see `ppec disk list {name}`)")
        if known.path == rec.disk_path:
            return BadInput(f"{target} is {name}'s root disk; it goes with the VM "
                            f"(`ppec vm delete {name}`)", code="ROOT_DISK")
        return Conflict(f"disk {target} of {name} ({known.path}) was not attached by "
                        f"ppec; refusing to touch it", code="NOT_OWNED")

    def _detach_from_domain(self, disk: DiskRecord, dom: Domain, timeout: int,
                            keep: bool) -> dict[str, Any] | None:
        """Out of the saved config, then out of the guest; an answer when it ends early."""
        hv, name, target = self.ctx.hv, disk.vm, disk.target
        saved = domxml.disk_xml(ET.fromstring(hv.xml(name, inactive=True)), target)
        if saved is not None:
            hv.detach_config(name, saved)
            log.info("%s: %s removed from the saved config", name, target)
        if not dom.active and hv.saved_state_xml(name):
            released = False   # suspended to disk: its guest wakes up with the disk
        else:
            released = self._wait_for_guest(disk, timeout)
        # The lock is ours again; while it was not, the VM may have been deleted (its
        # disks with it), even re-created with a disk of the same name and volume.
        if self.volumes.row(disk) is None:
            return {**self.volumes.detached(disk, keep),
                    "reason": "the VM was deleted meanwhile"}
        if not released:
            self.ctx.ledger.set_disk(name, target, "detach-pending")
            raise DetachPending(
                f"detach pending: the guest of {name} has not released {target} within "
                f"{timeout}s; it is out of the saved config, the volume {disk.path} is "
                f"kept; run `ppec disk detach {name} {target}` or `ppec disk list "
                f"{name}` again to finish", details={
                    "vm": name, "target": target, "path": disk.path,
                    "state": "detach-pending", "volume": "kept"})
        log.info("%s: %s released by the guest (libvirt: device removed)", name, target)
        return None

    def _wait_for_guest(self, disk: DiskRecord, timeout: int) -> bool:
        """Ask for the live removal and wait, with the host lock let go meanwhile."""
        key = (disk.vm, disk.target)
        self.ctx.in_flight.add(key)
        try:
            return self.ctx.hv.detach_live(disk.vm, disk.target, disk.path, timeout,
                                           self.ctx.unlocked)
        except LockBusy:
            # The lock was not ours again in time: touch nothing. The row stays
            # 'detaching' with no request waiting on it, which the next check settles.
            raise DetachPending(
                f"detach pending: {disk.target} of {disk.vm} is out of the saved config, "
                f"but the host lock stayed busy after waiting for the guest; the volume is "
                f"kept; `ppec disk list {disk.vm}` finishes it", details={
                    "vm": disk.vm, "target": disk.target, "path": disk.path,
                    "state": "detaching", "volume": "kept"}) from None
        finally:
            self.ctx.in_flight.discard(key)
