"""The ledger's data-disk rows against libvirt: read, settle, finish, count.

Shared by the disk handlers, VM deletion, drift and start-up recovery; the protocol the
rows follow is described in ``ppec.agent.handlers.disks``.
"""

from __future__ import annotations

import json
import logging
import string
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from itertools import count, product
from pathlib import Path
from typing import Any

from ppec.agent import domxml, storage
from ppec.agent.context import AgentContext
from ppec.agent.hypervisor import Domain
from ppec.agent.ledger import DiskRecord, VmRecord
from ppec.core.errors import BadInput, Conflict, NoCapacity, NotFound, StorageError
from ppec.core.units import format_size

log = logging.getLogger(__name__)

PREFIX = {"virtio": "vd", "scsi": "sd"}


def device_names(prefix: str) -> Iterator[str]:
    """vda, vdb, … vdz, vdaa, vdab, …: the kernel's own naming order."""
    for length in count(1):
        for letters in product(string.ascii_lowercase, repeat=length):
            yield prefix + "".join(letters)


class Volumes:
    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx

    # -- reading --------------------------------------------------------------------------

    def xml_disks(self, name: str, dom: Domain | None) -> tuple[list[domxml.DiskInfo],
                                                                 list[domxml.DiskInfo]]:
        """(live, persistent) disks of a domain. A domain that is not running has no live
        disks, unless it was suspended to disk (managed save): its guest resumes with the
        disks of the saved image, so those are live."""
        if dom is None:
            return [], []
        hv = self.ctx.hv
        config = domxml.disks(ET.fromstring(hv.xml(name, inactive=True)))
        if dom.active:
            live = domxml.disks(ET.fromstring(hv.xml(name)))
        else:
            saved = hv.saved_state_xml(name)
            live = domxml.disks(ET.fromstring(saved)) if saved else []
        return live, config

    def where(self, disk: DiskRecord, dom: Domain | None) -> tuple[bool, bool]:
        """(in the saved config, live) for a disk of the ledger, as libvirt has it now."""
        live, config = self.xml_disks(disk.vm, dom)

        def has(disks: list[domxml.DiskInfo]) -> bool:
            return any(d.target == disk.target and d.path == disk.path for d in disks)
        return has(config), has(live)

    def row(self, disk: DiskRecord) -> DiskRecord | None:
        """The ledger's row for this very disk (same target, volume and creation)."""
        return next((d for d in self.ctx.ledger.disks(disk.vm)
                     if (d.target, d.path, d.created_at) ==
                     (disk.target, disk.path, disk.created_at)), None)

    def free_target(self, name: str, dom: Domain, bus: str) -> str:
        live, config = self.xml_disks(name, dom)
        used = {d.target for d in live + config} | {
            d.target for d in self.ctx.ledger.disks(name)}
        # The kernel names disks in probe order whatever libvirt calls them; keeping the
        # names dense keeps the two close. 256 disks is far past any PCI bus's slots.
        for i, candidate in enumerate(device_names(PREFIX[bus])):
            if candidate not in used:
                return candidate
            if i > 256:
                break
        raise NoCapacity(f"VM {name} has no free {bus} disk name", code="NO_TARGET")

    def expected(self, rec: VmRecord) -> tuple[dict[str, set[str]], set[str]]:
        """For drift: where each of the VM's disks should be, and which may or may not."""
        live, config = {rec.disk_path}, {rec.disk_path}
        optional = {str(self.ctx.seed_path(rec.name))}
        for disk in self.ctx.ledger.disks(rec.name):
            if disk.state == "attached":
                live.add(disk.path)
                config.add(disk.path)
            elif disk.state == "detach-pending":
                live.add(disk.path)
            else:
                optional.add(disk.path)
        return {"live": live, "config": config}, optional

    # -- quotas and checks ----------------------------------------------------------------

    def check_quota(self, size: int) -> None:
        """The host's volume quota: count and total size of root and data volumes."""
        config = self.ctx.config
        vms, disks = self.ctx.ledger.all(), self.ctx.ledger.disks()
        volumes = len(vms) + len(disks)
        if volumes + 1 > config.max_volumes:
            raise NoCapacity(f"{config.host} holds {volumes} volumes, its quota is "
                             f"{config.max_volumes} (max_volumes)", code="VOLUME_QUOTA")
        quota = config.volume_quota_bytes
        used = sum(v.disk_bytes for v in vms) + sum(d.bytes for d in disks)
        if quota and used + size > quota:
            raise NoCapacity(f"{config.host}'s volumes would total "
                             f"{format_size(used + size)}, over its quota of "
                             f"{format_size(quota)} (volume_quota); {format_size(used)} in use",
                             code="VOLUME_QUOTA",
                             details={"used_bytes": used, "quota_bytes": quota})

    def check_existing(self, path: str) -> tuple[str, int, str]:
        """An existing volume may be attached only from the storage dir, unused by any
        domain (libvirt's, live or saved) and not open by any QEMU (its image lock)."""
        real = self._in_storage(path)
        self._unused(path, real)
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

    def _in_storage(self, path: str) -> Path:
        p = Path(path)
        if not p.is_absolute():
            raise BadInput(f"volume path {path!r} must be absolute (a path on the host)")
        real = p.resolve()
        storage_dir = self.ctx.storage_dir
        if not real.is_relative_to(storage_dir.resolve()):
            raise BadInput(f"volume {path} is not in the storage dir {storage_dir}: a "
                           f"guest must never be given other host files",
                           code="VOLUME_OUTSIDE")
        if not real.is_file():
            raise NotFound(f"volume {path} does not exist on {self.ctx.host}")
        return real

    def _unused(self, path: str, real: Path) -> None:
        ledger = self.ctx.ledger
        for vm in ledger.all():
            if real in (Path(vm.disk_path).resolve(), self.ctx.seed_path(vm.name).resolve()):
                raise Conflict(f"volume {path} is VM {vm.name}'s own disk", code="VOLUME_IN_USE")
        for d in ledger.disks():
            if Path(d.path).resolve() == real:
                raise Conflict(f"volume {path} is disk {d.target} of VM {d.vm} ({d.state})",
                               code="VOLUME_IN_USE")
        if users := self.ctx.hv.disk_users(str(real)):
            user, target = users[0]
            raise Conflict(f"volume {path} is used by domain {user} ({target})",
                           code="VOLUME_IN_USE", details={"domain": user, "target": target})

    # -- finishing and settling -----------------------------------------------------------

    def finish_detach(self, disk: DiskRecord, keep: bool) -> dict[str, Any]:
        """The guest has let go (libvirt said so): now, and only now, the volume may go."""
        if disk.owned and not keep:
            storage.remove_volume(Path(disk.path), self.ctx.storage_dir)
            log.info("%s: %s's volume %s deleted", disk.vm, disk.target, disk.path)
        self.ctx.ledger.remove_disk(disk.vm, disk.target)
        return self.detached(disk, keep)

    def detached(self, disk: DiskRecord, keep: bool) -> dict[str, Any]:
        """The answer for a finished detach: what became of the volume, and why."""
        deleted = disk.owned and not keep
        return {"vm": disk.vm, "host": self.ctx.host, "target": disk.target,
                "path": disk.path, "detached": True,
                "volume": "deleted" if deleted else "kept",
                "reason": "" if deleted else
                ("asked to keep it" if keep else "attached with --path")}

    def settle(self, disk: DiskRecord, dom: Domain | None) -> str | None:
        """Bring one row no request is working on in line with libvirt; what was done.

        Used at start-up (after a crash) and before each disk request (after a timeout,
        a lost connection, or a guest that answered late)."""
        where = f"{disk.vm}: {disk.target} ({disk.path})"
        if disk.state == "attached" or (disk.vm, disk.target) in self.ctx.in_flight:
            return None
        ledger = self.ctx.ledger
        saved, live = self.where(disk, dom)
        if disk.state == "attaching":
            if saved or live:
                ledger.set_disk(disk.vm, disk.target, "attached")
                return f"{where}: interrupted attach had finished; attached"
            if disk.owned:
                storage.remove_volume(Path(disk.path), self.ctx.storage_dir)
            ledger.remove_disk(disk.vm, disk.target)
            return f"{where}: interrupted attach undone"
        if saved:
            # Still in the saved config: the detach had changed nothing.
            ledger.set_disk(disk.vm, disk.target, "attached")
            return f"{where}: interrupted detach had changed nothing; attached"
        if live:
            if disk.state == "detach-pending":
                return None
            ledger.set_disk(disk.vm, disk.target, "detach-pending")
            return f"{where}: detach pending (guest still has it); volume kept"
        done = self.finish_detach(disk, disk.keep)
        return f"{where}: pending detach completed; volume {done['volume']}"

    def settle_vm(self, name: str, dom: Domain | None) -> list[str]:
        notes = [n for d in self.ctx.ledger.disks(name) if (n := self.settle(d, dom))]
        for note in notes:
            log.info("%s", note)
        return notes

    def recover(self) -> list[str]:
        """After a crash: every disk row ends in a state libvirt agrees with."""
        notes = []
        for disk in self.ctx.ledger.disks():
            rec = self.ctx.ledger.get(disk.vm)
            if rec is None or rec.state != "present":
                continue   # the VM's own recovery takes its disks with it
            if (note := self.settle(disk, self.ctx.hv.find(disk.vm))) is not None:
                notes.append(note)
                log.warning("recovery: %s", note)
        return notes

    def remove_vm_disks(self, name: str) -> list[str]:
        """With the VM gone from libvirt: delete the volumes ppec made for it, unless a
        detach asked to keep them; return the paths kept."""
        kept = []
        for disk in self.ctx.ledger.disks(name):
            if disk.owned and not disk.keep:
                storage.remove_volume(Path(disk.path), self.ctx.storage_dir)
            else:
                kept.append(disk.path)
        return kept
