"""What the agent does: one handler per method in ``ppec.agent.methods``.

State-changing handlers are called with the host lock held (the server takes it), so
checks and the changes they guard cannot interleave with another request.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

import ppec
from ppec.agent import domxml, storage
from ppec.agent.config import AgentConfig, parse_cpu_list
from ppec.agent.hypervisor import Domain, Hypervisor
from ppec.agent.ledger import Ledger, VmRecord, now
from ppec.errors import AlreadyExists, Conflict, NoCapacity, NotFound, PpecError

log = logging.getLogger(__name__)


class AgentService:
    def __init__(self, config: AgentConfig, hypervisor: Hypervisor, ledger: Ledger) -> None:
        self.config = config
        self.hv = hypervisor
        self.ledger = ledger
        self.storage_dir = Path(config.storage_dir)
        self.started = time.time()
        self._domain_type: str | None = None

    @property
    def domain_type(self) -> str:
        if self._domain_type is None:
            self._domain_type = self.hv.pick_domain_type(self.config.domain_type)
        return self._domain_type

    # -- start-up ---------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Finish or undo what a crash interrupted; returns what it did, for the log."""
        done = []
        for rec in self.ledger.all():
            dom = self.hv.find(rec.name)
            if rec.state == "creating":
                if dom is not None and self._ours(dom) and dom.active:
                    self.ledger.set_state(rec.name, "present")
                    done.append(f"{rec.name}: create had finished; kept")
                else:
                    self._undo_create(rec, defined=self._ours(dom))
                    done.append(f"{rec.name}: interrupted create undone")
            elif rec.state == "deleting":
                self._finish_delete(rec, dom)
                done.append(f"{rec.name}: interrupted delete finished")
        return done

    def _ours(self, dom: Domain | None) -> bool:
        """Built by this host's agent: ppec metadata naming this host."""
        return dom is not None and dom.owner is not None and dom.owner.host == self.config.host

    # -- read-only --------------------------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        return {"host": self.config.host, "version": ppec.__version__, "time": time.time()}

    def host_info(self) -> dict[str, Any]:
        node = self.hv.node()
        mem = psutil.virtual_memory()
        disk = shutil.disk_usage(self.storage_dir)
        vms = self.ledger.all()
        return {
            "host": self.config.host,
            "agent_version": ppec.__version__,
            "uptime_s": round(time.time() - self.started, 1),
            "kernel": platform.release(),
            "libvirt_uri": self.config.libvirt_uri,
            "libvirt_version": node.libvirt_version,
            "hypervisor": node.hypervisor,
            "domain_type": self.domain_type,
            "cpus": node.cpus,
            "reserved_cpus": sorted(parse_cpu_list(self.config.reserved_cpus)),
            "memory_mib": node.memory_mib,
            "reserved_memory_mib": self.config.reserved_memory_mib,
            "committed_memory_mib": sum(v.memory_mib for v in vms),
            "committed_vcpus": sum(v.vcpus for v in vms),
            "os_memory_available_mib": mem.available >> 20,
            "cpu_percent": psutil.cpu_percent(interval=None),
            "storage_dir": str(self.storage_dir),
            "storage_free_bytes": disk.free,
            "storage_total_bytes": disk.total,
            "vm_count": len(vms),
        }

    def _view(self, dom: Domain | None, rec: VmRecord | None) -> dict[str, Any]:
        """One VM as operators see it: libvirt's live state, the ledger's ownership facts."""
        if rec is None:
            assert dom is not None
            rec = VmRecord(dom.name, dom.uuid, "absent", dom.vcpus, dom.memory_mib,
                           dom.disks[0] if dom.disks else "", 0, "", "", dom.owner.created
                           if dom.owner else "")
        return {
            "name": rec.name, "host": self.config.host, "uuid": rec.uuid,
            "state": dom.state if dom else "missing",
            "vcpus": dom.vcpus if dom else rec.vcpus,
            "memory_mib": dom.memory_mib if dom else rec.memory_mib,
            "disk_path": rec.disk_path, "disk_bytes": rec.disk_bytes, "image": rec.image,
            "created_at": rec.created_at, "ledger": rec.state,
        }

    def vm_list(self) -> dict[str, Any]:
        domains = {d.name: d for d in self.hv.domains()}
        records = {r.name: r for r in self.ledger.all()}
        names = sorted(n for n in set(domains) | set(records)
                       if n in records or self._ours(domains[n]))
        return {"vms": [self._view(domains.get(n), records.get(n)) for n in names],
                "foreign": sorted(n for n, d in domains.items()
                                  if not self._ours(d) and n not in records)}

    def vm_get(self, name: str) -> dict[str, Any]:
        dom, rec = self.hv.find(name), self.ledger.get(name)
        if rec is None and not self._ours(dom):
            raise NotFound(f"no VM named {name} on {self.config.host}")
        return self._view(dom, rec)

    # -- state changes (host lock held) ----------------------------------------------------

    def vm_create(self, name: str, vcpus: int, memory_mib: int, disk_bytes: int,
                  image: str) -> dict[str, Any]:
        if self.hv.find(name) is not None or self.ledger.get(name) is not None:
            raise AlreadyExists(f"a domain named {name} already exists on {self.config.host}")
        self._check_capacity(vcpus, memory_mib)
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        rec = VmRecord(name=name, uuid=str(uuid.uuid4()), state="creating", vcpus=vcpus,
                       memory_mib=memory_mib, disk_path=str(self.storage_dir / f"{name}.qcow2"),
                       disk_bytes=disk_bytes, image=image, power="running", created_at=now())
        self.ledger.begin_create(rec)
        step = "create disk"
        made_disk = defined = False
        try:
            storage.create_volume(Path(rec.disk_path), disk_bytes, image)
            made_disk = True
            step = "define domain"
            node = self.hv.node()
            self.hv.define(domxml.build_domain(domxml.DomainSpec(
                name=name, uuid=rec.uuid, domain_type=self.domain_type, arch=node.arch,
                vcpus=vcpus, memory_mib=memory_mib, disk_path=rec.disk_path,
                host=self.config.host, created=rec.created_at, emulator=self.config.emulator)))
            defined = True
            step = "start domain"
            self.hv.start(name)
        except PpecError as e:
            log.warning("create %s failed at %s: %s; undoing", name, step, e)
            self._undo_create(rec, defined=defined, disk=made_disk)
            e.message = f"create {name} failed at step '{step}': {e.message}"
            e.details["step"] = step
            raise
        self.ledger.set_state(name, "present")
        return self.vm_get(name)

    def _check_capacity(self, vcpus: int, memory_mib: int) -> None:
        node = self.hv.node()
        usable_cpus = node.cpus - len(parse_cpu_list(self.config.reserved_cpus))
        if vcpus > usable_cpus:
            raise NoCapacity(f"{self.config.host}: {vcpus} vCPUs requested, the host has "
                             f"{usable_cpus} usable CPUs",
                             details={"usable_cpus": usable_cpus, "vcpus": vcpus})
        budget = node.memory_mib - self.config.reserved_memory_mib
        committed = sum(r.memory_mib for r in self.ledger.all())
        if committed + memory_mib > budget:
            raise NoCapacity(f"{self.config.host}: {memory_mib} MiB requested, "
                             f"{max(budget - committed, 0)} MiB free of {budget} MiB",
                             details={"free_mib": budget - committed, "needed_mib": memory_mib})

    def _undo_create(self, rec: VmRecord, *, defined: bool, disk: bool = True) -> None:
        """Reverse a create step by step; each step tolerates the one before not having run."""
        if defined:
            for undo in (self.hv.destroy, self.hv.undefine):
                with contextlib.suppress(NotFound):
                    undo(rec.name)
        if disk:
            storage.remove_volume(Path(rec.disk_path), self.storage_dir)
        self.ledger.remove(rec.name)

    def _owned(self, name: str) -> tuple[Domain | None, VmRecord]:
        dom, rec = self.hv.find(name), self.ledger.get(name)
        if rec is None:
            if dom is None:
                raise NotFound(f"no VM named {name} on {self.config.host}")
            raise Conflict(f"domain {name} on {self.config.host} was not created by this "
                           f"host's ppec agent; refusing to touch it", code="NOT_OWNED")
        return dom, rec

    def vm_delete(self, name: str) -> dict[str, Any]:
        dom, rec = self._owned(name)
        self.ledger.set_state(name, "deleting")
        self._finish_delete(rec, dom)
        return {"name": name, "host": self.config.host, "deleted": True,
                "disk_path": rec.disk_path}

    def _finish_delete(self, rec: VmRecord, dom: Domain | None) -> None:
        if dom is not None:
            self.hv.destroy(rec.name)
            self.hv.undefine(rec.name)
        storage.remove_volume(Path(rec.disk_path), self.storage_dir)
        self.ledger.remove(rec.name)

    def vm_start(self, name: str) -> dict[str, Any]:
        dom, _ = self._owned(name)
        if dom is None:
            raise Conflict(f"VM {name} is in the ledger but libvirt has no such domain",
                           code="MISSING")
        if not dom.active:
            self.hv.start(name)
        self.ledger.set_power(name, "running")
        return self.vm_get(name)

    def vm_stop(self, name: str, force: bool, timeout: int) -> dict[str, Any]:
        dom, _ = self._owned(name)
        if dom is None:
            raise Conflict(f"VM {name} is in the ledger but libvirt has no such domain",
                           code="MISSING")
        if dom.active:
            if force:
                self.hv.destroy(name)
            else:
                self.hv.shutdown(name)
                if not self.hv.wait_inactive(name, timeout):
                    raise Conflict(f"VM {name} did not shut down within {timeout}s (the guest "
                                   f"ignored the ACPI request); use --force to power it off",
                                   code="STOP_TIMEOUT")
        self.ledger.set_power(name, "shut-off")
        return self.vm_get(name)


def ensure_dirs(config: AgentConfig) -> None:
    """Create the state and storage dirs with the modes QEMU needs.

    QEMU runs as an unprivileged user (libvirt-qemu); libvirt hands it each disk file, but
    every directory above the file must be searchable (x) by it. So the dirs are 0711:
    searchable, not listable; the ledger file itself is 0600.
    """
    for path in (config.state_dir, config.storage_dir):
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o711)
