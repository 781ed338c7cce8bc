"""Data disks: attach, list and detach on a VM, live and persistent, never losing a volume.

Every step is written to the ledger before it happens, so a crash anywhere is resolved at
start-up (``recover_disks``):

    attach:  row 'attaching' -> make volume -> libvirt attach (config + live) -> 'attached'
    detach:  row 'detaching' -> remove from config -> ask the guest (live) and wait for
             libvirt's device-removed event -> delete volume -> row gone
             (guest too slow: row 'detach-pending', volume kept; resolved later)

A volume is deleted only after libvirt confirms the guest no longer has the disk. Volumes
ppec made (``--size``) are deleted on detach unless kept; volumes attached with ``--path``
belong to whoever made them and are always kept.
"""

from __future__ import annotations

import json
import logging
import secrets
import string
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from itertools import count, product
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppec.agent import domxml, storage
from ppec.agent.ledger import DiskRecord
from ppec.core.clock import utc_now
from ppec.core.errors import (
    BadInput,
    Conflict,
    DetachPending,
    LockBusy,
    NoCapacity,
    NotFound,
    PpecError,
    StorageError,
)
from ppec.core.units import format_size

if TYPE_CHECKING:
    from ppec.agent.config import AgentConfig
    from ppec.agent.hypervisor import Domain, Hypervisor
    from ppec.agent.ledger import Ledger, VmRecord

log = logging.getLogger(__name__)

PREFIX = {"virtio": "vd", "scsi": "sd"}


def device_names(prefix: str) -> Iterator[str]:
    """vda, vdb, … vdz, vdaa, vdab, …: the kernel's own naming order."""
    for length in count(1):
        for letters in product(string.ascii_lowercase, repeat=length):
            yield prefix + "".join(letters)


class DiskOps:
    """Mixed into ``AgentService``; state-changing methods run under the host lock."""

    config: AgentConfig
    hv: Hypervisor
    ledger: Ledger
    storage_dir: Path
    # Set by the server: releases the host lock for the duration (see AgentServer).
    unlocked: Callable[[], AbstractContextManager[Any]] = nullcontext
    # Detaches waiting for their guest right now (with the host lock let go); a
    # 'detaching' row not in here was left by a request that failed or a crash.
    _in_flight: set[tuple[str, str]]

    def _owned(self, name: str) -> tuple[Domain | None, VmRecord]:
        raise NotImplementedError

    def _seed_path(self, name: str) -> Path:
        raise NotImplementedError

    # -- reading --------------------------------------------------------------------------

    def _xml_disks(self, name: str, dom: Domain | None) -> tuple[list[domxml.DiskInfo],
                                                                  list[domxml.DiskInfo]]:
        """(live, persistent) disks of a domain. A domain that is not running has no live
        disks, unless it was suspended to disk (managed save): its guest resumes with the
        disks of the saved image, so those are live."""
        if dom is None:
            return [], []
        config = domxml.disks(ET.fromstring(self.hv.xml(name, inactive=True)))
        if dom.active:
            live = domxml.disks(ET.fromstring(self.hv.xml(name)))
        else:
            saved = self.hv.saved_state_xml(name)
            live = domxml.disks(ET.fromstring(saved)) if saved else []
        return live, config

    def disk_list(self, name: str) -> dict[str, Any]:
        dom, rec = self._owned(name)
        notes = self._settle_vm(name, dom)
        live, config = self._xml_disks(name, dom)
        rows = {d.target: d for d in self.ledger.disks(name)}
        seed = str(self._seed_path(name))
        out = []
        for target in sorted({d.target for d in live + config} | set(rows),
                             key=lambda t: (t[:2], len(t), t)):
            in_live = next((d for d in live if d.target == target), None)
            in_config = next((d for d in config if d.target == target), None)
            info = in_live or in_config
            row = rows.get(target)
            path = row.path if row else (info.path if info else "")
            if row is not None:
                kind, size, state = "data", row.bytes, row.state
            elif path == rec.disk_path:
                kind, size, state = "root", rec.disk_bytes, "attached"
            elif path == seed:
                kind, size, state = "seed", 0, "attached"
            else:
                kind, size, state = "foreign", 0, "attached"
            out.append({"target": target, "bus": row.bus if row else (info.bus if info else ""),
                        "path": path, "size_bytes": size, "kind": kind, "state": state,
                        "live": in_live is not None, "persistent": in_config is not None,
                        "volume": ("ppec" if row.owned else "path") if row else kind,
                        "serial": info.serial if info else ""})
        return {"vm": name, "host": self.config.host, "disks": out, "resolved": notes}

    # -- attach -----------------------------------------------------------------------------

    def disk_attach(self, name: str, size_bytes: int = 0, path: str = "",
                    bus: str = "virtio") -> dict[str, Any]:
        if bool(size_bytes) == bool(path):
            raise BadInput("give either a size (a new volume) or a path (an existing "
                           "volume), not both or neither")
        dom, rec = self._owned(name)
        if dom is None:
            raise Conflict(f"VM {name} is in the ledger but libvirt has no such domain",
                           code="MISSING")
        if rec.state != "present":
            raise Conflict(f"VM {name} is {rec.state}; try again when it is present",
                           code="BUSY")
        self._settle_vm(name, dom)
        target = self._free_target(name, dom, bus)
        if path:
            # From here on the resolved path: what was checked is what libvirt gets.
            fmt, size, path = self._check_existing(path)
        else:
            self.check_quota(size_bytes)
            storage.check_space(self.storage_dir, size_bytes)
            fmt, size = "qcow2", size_bytes
            path = str(self.storage_dir / f"{name}-{target}-{secrets.token_hex(3)}.qcow2")
        disk = DiskRecord(vm=name, target=target, path=path, bytes=size, bus=bus, format=fmt,
                          owned=bool(size_bytes), keep=False, state="attaching",
                          created_at=utc_now())
        self.ledger.begin_attach(disk)
        step, made = "create volume", False
        try:
            if disk.owned:
                storage.create_volume(Path(path), size)
                made = True
            if bus == "scsi":
                step = "add SCSI controller"
                self._ensure_scsi_controller(name, dom)
            step = "attach"
            self.hv.attach_device(name, ET.tostring(domxml.disk_element(
                path, target, fmt, bus, serial=f"ppec-{target}"), encoding="unicode"))
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
                storage.remove_volume(Path(path), self.storage_dir)
            self.ledger.remove_disk(name, target)
            if not isinstance(e, PpecError):
                raise PpecError(f"attach to {name} failed at step '{step}': {e}",
                                details={"step": step}) from None
            e.message = f"attach to {name} failed at step '{step}': {e.message}"
            e.details["step"] = step
            raise
        self.ledger.set_disk(name, target, "attached")
        return {"vm": name, "host": self.config.host, "target": target, "path": path,
                "size_bytes": size, "bus": bus, "format": fmt, "serial": f"ppec-{target}",
                "live": dom.active, "persistent": True,
                "volume": "ppec" if disk.owned else "path"}

    def _maybe_attached(self, disk: DiskRecord) -> bool:
        """After a failed attach call: is the disk in libvirt anyway (or can we not tell)?"""
        try:
            saved, live = self._where(disk, self.hv.find(disk.vm))
        except PpecError:
            return True
        return saved or live

    def _free_target(self, name: str, dom: Domain, bus: str) -> str:
        live, config = self._xml_disks(name, dom)
        used = {d.target for d in live + config} | {d.target for d in self.ledger.disks(name)}
        # The kernel names disks in probe order whatever libvirt calls them; keeping the
        # names dense keeps the two close. 256 disks is far past any PCI bus's slots.
        for i, candidate in enumerate(device_names(PREFIX[bus])):
            if candidate not in used:
                return candidate
            if i > 256:
                break
        raise NoCapacity(f"VM {name} has no free {bus} disk name", code="NO_TARGET")

    def check_quota(self, size: int) -> None:
        """The host's volume quota: count and total size of root and data volumes."""
        vms, disks = self.ledger.all(), self.ledger.disks()
        volumes = len(vms) + len(disks)
        if volumes + 1 > self.config.max_volumes:
            raise NoCapacity(f"{self.config.host} holds {volumes} volumes, its quota is "
                             f"{self.config.max_volumes} (max_volumes)", code="VOLUME_QUOTA")
        quota = self.config.volume_quota_bytes
        used = sum(v.disk_bytes for v in vms) + sum(d.bytes for d in disks)
        if quota and used + size > quota:
            raise NoCapacity(f"{self.config.host}'s volumes would total "
                             f"{format_size(used + size)}, over its quota of "
                             f"{format_size(quota)} (volume_quota); {format_size(used)} in use",
                             code="VOLUME_QUOTA",
                             details={"used_bytes": used, "quota_bytes": quota})

    def _check_existing(self, path: str) -> tuple[str, int, str]:
        """An existing volume may be attached only from the storage dir, unused by any
        domain (libvirt's, live or saved) and not open by any QEMU (its image lock)."""
        p = Path(path)
        if not p.is_absolute():
            raise BadInput(f"volume path {path!r} must be absolute (a path on the host)")
        real = p.resolve()
        if not real.is_relative_to(self.storage_dir.resolve()):
            raise BadInput(f"volume {path} is not in the storage dir {self.storage_dir}: a "
                           f"guest must never be given other host files",
                           code="VOLUME_OUTSIDE")
        if not real.is_file():
            raise NotFound(f"volume {path} does not exist on {self.config.host}")
        for vm in self.ledger.all():
            if real in (Path(vm.disk_path).resolve(), self._seed_path(vm.name).resolve()):
                raise Conflict(f"volume {path} is VM {vm.name}'s own disk", code="VOLUME_IN_USE")
        for d in self.ledger.disks():
            if Path(d.path).resolve() == real:
                raise Conflict(f"volume {path} is disk {d.target} of VM {d.vm} ({d.state})",
                               code="VOLUME_IN_USE")
        if users := self.hv.disk_users(str(real)):
            user, target = users[0]
            raise Conflict(f"volume {path} is used by domain {user} ({target})",
                           code="VOLUME_IN_USE", details={"domain": user, "target": target})
        try:
            info = json.loads(storage.qemu_img("info", "--output=json", str(real)))
        except StorageError as e:   # most often: another process holds its write lock
            raise Conflict(f"volume {path} cannot be opened: {e.message}",
                           code="VOLUME_IN_USE") from None
        # A volume naming other files (a backing file, a qcow2 external data file) would
        # hand the guest those files too.
        data_file = info.get("format-specific", {}).get("data", {}).get("data-file")
        if info.get("backing-filename") or data_file:
            raise BadInput(f"volume {path} refers to another file "
                           f"({info.get('backing-filename') or data_file}); only standalone "
                           f"volumes can be attached", code="VOLUME_BACKED")
        if info["format"] not in ("qcow2", "raw"):
            raise BadInput(f"volume {path} is {info['format']}, not qcow2 or raw")
        return str(info["format"]), int(info["virtual-size"]), str(real)

    def _ensure_scsi_controller(self, name: str, dom: Domain) -> None:
        root = ET.fromstring(self.hv.xml(name, inactive=not dom.active))
        if not domxml.has_scsi_controller(root):
            self.hv.attach_device(name, ET.tostring(domxml.scsi_controller_element(),
                                                    encoding="unicode"))

    # -- detach -----------------------------------------------------------------------------

    def disk_detach(self, name: str, target: str, timeout: int = 20,
                    keep_volume: bool = False, path: str = "") -> dict[str, Any]:
        """``path``, when given, must be the disk's volume: an approved request names the
        volume it approved, so a later disk under the same target name is not it."""
        dom, rec = self._owned(name)
        before = next((d for d in self.ledger.disks(name) if d.target == target), None)
        self._settle_vm(name, dom)
        disk = next((d for d in self.ledger.disks(name) if d.target == target), None)
        if disk is None and before is not None:
            # A pending detach the guest (or a power-off) had completed: finished just now.
            return self._detached(before, before.keep)
        if disk is None:
            live, config = self._xml_disks(name, dom)
            known = next((d for d in live + config if d.target == target), None)
            if known is None:
                raise NotFound(f"VM {name} has no disk {target} (see `ppec disk list {name}`)")
            if known.path == rec.disk_path:
                raise BadInput(f"{target} is {name}'s root disk; it goes with the VM "
                               f"(`ppec vm delete {name}`)", code="ROOT_DISK")
            raise Conflict(f"disk {target} of {name} ({known.path}) was not attached by "
                           f"ppec; refusing to touch it", code="NOT_OWNED")
        if path and path != disk.path:
            raise Conflict(f"disk {target} of {name} is now {disk.path}, not {path} (the "
                           f"volume the request named)", code="DISK_CHANGED")
        if (name, target) in self._in_flight:
            raise Conflict(f"a detach of {target} from {name} is already waiting for the "
                           f"guest; see `ppec disk list {name}`", code="BUSY")
        keep = keep_volume or disk.keep   # once asked to keep, a volume is never deleted
        self.ledger.set_disk(name, target, "detaching", keep=keep)
        if dom is not None:
            saved = domxml.disk_xml(ET.fromstring(self.hv.xml(name, inactive=True)), target)
            if saved is not None:
                self.hv.detach_config(name, saved)
                log.info("%s: %s removed from the saved config", name, target)
            if not dom.active and self.hv.saved_state_xml(name):
                released = False   # suspended to disk: its guest wakes up with the disk
            else:
                released = self._wait_for_guest(disk, timeout)
            # The lock is ours again; while it was not, the VM may have been deleted (its
            # disks with it), even re-created with a disk of the same name and volume.
            if self._row(disk) is None:
                return {**self._detached(disk, keep), "reason": "the VM was deleted meanwhile"}
            if not released:
                self.ledger.set_disk(name, target, "detach-pending")
                raise DetachPending(
                    f"detach pending: the guest of {name} has not released {target} within "
                    f"{timeout}s; it is out of the saved config, the volume {disk.path} is "
                    f"kept; run `ppec disk detach {name} {target}` or `ppec disk list "
                    f"{name}` again to finish", details={
                        "vm": name, "target": target, "path": disk.path,
                        "state": "detach-pending", "volume": "kept"})
            log.info("%s: %s released by the guest (libvirt: device removed)", name, target)
        return self._finish_detach(disk, keep)

    def _wait_for_guest(self, disk: DiskRecord, timeout: int) -> bool:
        """Ask for the live removal and wait, with the host lock let go meanwhile."""
        key = (disk.vm, disk.target)
        self._in_flight.add(key)
        try:
            return self.hv.detach_live(disk.vm, disk.target, disk.path, timeout,
                                       self.unlocked)
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
            self._in_flight.discard(key)

    def _row(self, disk: DiskRecord) -> DiskRecord | None:
        """The ledger's row for this very disk (same target, volume and creation)."""
        return next((d for d in self.ledger.disks(disk.vm)
                     if (d.target, d.path, d.created_at) ==
                     (disk.target, disk.path, disk.created_at)), None)

    def _finish_detach(self, disk: DiskRecord, keep: bool) -> dict[str, Any]:
        """The guest has let go (libvirt said so): now, and only now, the volume may go."""
        if disk.owned and not keep:
            storage.remove_volume(Path(disk.path), self.storage_dir)
            log.info("%s: %s's volume %s deleted", disk.vm, disk.target, disk.path)
        self.ledger.remove_disk(disk.vm, disk.target)
        return self._detached(disk, keep)

    def _detached(self, disk: DiskRecord, keep: bool) -> dict[str, Any]:
        """The answer for a finished detach: what became of the volume, and why."""
        deleted = disk.owned and not keep
        return {"vm": disk.vm, "host": self.config.host, "target": disk.target,
                "path": disk.path, "detached": True,
                "volume": "deleted" if deleted else "kept",
                "reason": "" if deleted else
                ("asked to keep it" if keep else "attached with --path")}

    def _where(self, disk: DiskRecord, dom: Domain | None) -> tuple[bool, bool]:
        """(in the saved config, live) for a disk of the ledger, as libvirt has it now."""
        live, config = self._xml_disks(disk.vm, dom)

        def has(disks: list[domxml.DiskInfo]) -> bool:
            return any(d.target == disk.target and d.path == disk.path for d in disks)
        return has(config), has(live)

    def _settle(self, disk: DiskRecord, dom: Domain | None) -> str | None:
        """Bring one row no request is working on in line with libvirt; what was done.

        Used at start-up (after a crash) and before each disk request (after a timeout,
        a lost connection, or a guest that answered late)."""
        where = f"{disk.vm}: {disk.target} ({disk.path})"
        if disk.state == "attached" or (disk.vm, disk.target) in self._in_flight:
            return None
        saved, live = self._where(disk, dom)
        if disk.state == "attaching":
            if saved or live:
                self.ledger.set_disk(disk.vm, disk.target, "attached")
                return f"{where}: interrupted attach had finished; attached"
            if disk.owned:
                storage.remove_volume(Path(disk.path), self.storage_dir)
            self.ledger.remove_disk(disk.vm, disk.target)
            return f"{where}: interrupted attach undone"
        if saved:
            # Still in the saved config: the detach had changed nothing.
            self.ledger.set_disk(disk.vm, disk.target, "attached")
            return f"{where}: interrupted detach had changed nothing; attached"
        if live:
            if disk.state == "detach-pending":
                return None
            self.ledger.set_disk(disk.vm, disk.target, "detach-pending")
            return f"{where}: detach pending (guest still has it); volume kept"
        done = self._finish_detach(disk, disk.keep)
        return f"{where}: pending detach completed; volume {done['volume']}"

    def _settle_vm(self, name: str, dom: Domain | None) -> list[str]:
        notes = [n for d in self.ledger.disks(name) if (n := self._settle(d, dom))]
        for note in notes:
            log.info("%s", note)
        return notes

    # -- recovery and deletion ------------------------------------------------------------

    def recover_disks(self) -> list[str]:
        """After a crash: every disk row ends in a state libvirt agrees with."""
        notes = []
        for disk in self.ledger.disks():
            rec = self.ledger.get(disk.vm)
            if rec is None or rec.state != "present":
                continue   # the VM's own recovery takes its disks with it
            if (note := self._settle(disk, self.hv.find(disk.vm))) is not None:
                notes.append(note)
                log.warning("recovery: %s", note)
        return notes

    def remove_vm_disks(self, name: str) -> list[str]:
        """With the VM gone from libvirt: delete the volumes ppec made for it, unless a
        detach asked to keep them; return the paths kept."""
        kept = []
        for disk in self.ledger.disks(name):
            if disk.owned and not disk.keep:
                storage.remove_volume(Path(disk.path), self.storage_dir)
            else:
                kept.append(disk.path)
        return kept

    def _expected_disks(self, rec: VmRecord) -> tuple[dict[str, set[str]], set[str]]:
        """For drift: where each of the VM's disks should be, and which may or may not."""
        live, config = {rec.disk_path}, {rec.disk_path}
        optional = {str(self._seed_path(rec.name))}
        for disk in self.ledger.disks(rec.name):
            if disk.state == "attached":
                live.add(disk.path)
                config.add(disk.path)
            elif disk.state == "detach-pending":
                live.add(disk.path)
            else:
                optional.add(disk.path)
        return {"live": live, "config": config}, optional
