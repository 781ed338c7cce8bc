"""What the agent does: one handler per method in ``ppec.wire.methods``.

State-changing handlers are called with the host lock held (the server takes it), so
checks and the changes they guard cannot interleave with another request.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

import ppec
from ppec import numa
from ppec.agent import domxml, drift, files, seed, storage
from ppec.agent.config import AgentConfig, parse_cpu_list
from ppec.agent.diskops import DiskOps
from ppec.agent.hypervisor import Domain, Hypervisor
from ppec.agent.ledger import Ledger, VmRecord
from ppec.core.clock import utc_now
from ppec.core.errors import AlreadyExists, BadInput, Conflict, NoCapacity, NotFound, PpecError
from ppec.numa.topology import format_cpulist
from ppec.wire import bundle as pkgfiles

log = logging.getLogger(__name__)


class AgentService(DiskOps):
    def __init__(self, config: AgentConfig, hypervisor: Hypervisor, ledger: Ledger) -> None:
        self.config = config
        self.hv = hypervisor
        self.ledger = ledger
        self.storage_dir = Path(config.storage_dir)
        self.started = time.time()
        self._domain_type: str | None = None
        self._topology: numa.Topology | None = None
        self._in_flight = set()
        # Set by agent.update once the new files are in place: the server stops after
        # replying and the daemon re-executes itself on them.
        self.restart_requested = False
        # What this process runs (read at start: the files on disk may be newer), and a
        # new id per start, so a client can tell the restarted agent from the old one.
        self.boot_id = str(uuid.uuid4())
        self._running = pkgfiles.manifest(pkgfiles.package_root())

    @property
    def domain_type(self) -> str:
        if self._domain_type is None:
            self._domain_type = self.hv.pick_domain_type(self.config.domain_type)
        return self._domain_type

    def topology(self) -> numa.Topology:
        """The host's NUMA cells from libvirt, less what is reserved for the host itself.

        Reserved memory comes off the first cell, where the host OS and its page cache live.
        A host whose libvirt reports no cells is one cell of all its CPUs.
        """
        if self._topology is None:
            topo = numa.from_capabilities(self.hv.capabilities())
            if not topo.cells:
                node = self.hv.node()
                topo = numa.single_node(node.cpus, node.memory_mib)
            cells = list(topo.cells)
            cells[0] = replace(cells[0], memory_mib=max(
                cells[0].memory_mib - self.config.reserved_memory_mib, 0))
            self._topology = numa.Topology(tuple(cells),
                                           parse_cpu_list(self.config.reserved_cpus))
        return self._topology

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
        return done + self.recover_disks() + self.rebuild_holdings()

    def rebuild_holdings(self) -> list[str]:
        """Re-read every VM's CPUs and memory from its live XML; the live XML wins.

        A mismatch with the ledger means someone changed the domain behind the agent's back
        (or a crash came between libvirt and the ledger): it is logged, for drift reports.
        """
        notes = []
        ledger = {a.vm: a for a in self.ledger.allocations()}
        for rec in self.ledger.all():
            dom = self.hv.find(rec.name)
            if rec.state != "present" or not self._ours(dom):
                continue
            cpus, memory = self._live_holdings(rec, self.hv.xml(rec.name))
            held = ledger.get(rec.name)
            if held is not None and (held.cpus, held.memory) == (cpus, memory):
                continue
            notes.append(f"{rec.name}: ledger held CPUs "
                         f"{format_cpulist(held.cpus) if held else '-'}, live XML has "
                         f"{format_cpulist(cpus) or '-'}; the live XML wins")
            log.warning("drift: %s", notes[-1])
            try:
                self.ledger.replace_holdings(rec.name, cpus, memory)
            except AlreadyExists as e:
                log.error("drift: %s: %s", rec.name, e)
                notes.append(f"{rec.name}: live CPUs collide with another VM's: {e}")
        return notes

    def _live_holdings(self, rec: VmRecord, xml: str
                       ) -> tuple[frozenset[int], tuple[tuple[int, int], ...]]:
        root = ET.fromstring(xml)
        owner = domxml.ownership(root)
        if owner is None or owner.numa.policy != "dedicated":
            return frozenset(), ((-1, rec.memory_mib),)
        live = domxml.live_pins(root)
        held = set(live.vcpu_pins) | set(live.emulator_cpus)
        if owner.numa.threads == "isolate":
            siblings = {c.id: c.siblings for cell in self.topology().cells for c in cell.cpus}
            held |= {s for cpu in list(held) for s in siblings.get(cpu, {cpu})}
        return frozenset(held), tuple(sorted(live.cells))

    def _ours(self, dom: Domain | None) -> bool:
        """Built by this host's agent: ppec metadata naming this host."""
        return dom is not None and dom.owner is not None and dom.owner.host == self.config.host

    # -- read-only --------------------------------------------------------------------------

    def agent_manifest(self) -> dict[str, Any]:
        """The files this process started with (not what is on disk now)."""
        return {"host": self.config.host, "version": ppec.__version__,
                "root": str(pkgfiles.package_root()), "files": self._running,
                "digest": pkgfiles.digest(ppec.__version__, self._running),
                "boot_id": self.boot_id}

    def agent_update(self, version: str, manifest: dict[str, Any], bundle: str,
                     digest: str) -> dict[str, Any]:
        """Swap in the operator's files (under the host lock: no VM change is half-done),
        then restart on them; running VMs are libvirtd's and are not touched."""
        if pkgfiles.digest(version, manifest) != digest:
            raise BadInput("the manifest does not match its digest", code="BAD_UPDATE")
        if self._in_flight:
            raise Conflict("a disk detach is waiting for its guest; update after it ends",
                           code="BUSY")
        if self.restart_requested:
            raise Conflict("an update is already in place; the agent is restarting",
                           code="BUSY")
        result = files.apply(pkgfiles.package_root(), version, manifest, bundle, sys.executable)
        self.restart_requested = True
        return {"host": self.config.host, "from": ppec.__version__, **result,
                "restarting": True}

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
            # The NUMA cells' memory where libvirt reports cells (what the fit uses).
            "memory_mib": sum(c.memory_mib for c in self.topology().cells)
            + self.config.reserved_memory_mib,
            "reserved_memory_mib": self.config.reserved_memory_mib,
            "committed_memory_mib": sum(v.memory_mib for v in vms),
            "committed_vcpus": sum(v.vcpus for v in vms),
            "dedicated_cpus": sum(len(a.cpus) for a in self.ledger.allocations()),
            "numa_nodes": len(self.topology().cells),
            "os_memory_available_mib": mem.available >> 20,
            "cpu_percent": psutil.cpu_percent(interval=None),
            "storage_dir": str(self.storage_dir),
            "storage_free_bytes": disk.free,
            "storage_total_bytes": disk.total,
            "vm_count": len(vms),
        }

    def host_numa(self) -> dict[str, Any]:
        topo = self.topology()
        allocs = self.ledger.allocations()
        held = {cpu: a.vm for a in allocs for cpu in a.cpus}
        nodes = []
        for cell in topo.cells:
            ids = {c.id for c in cell.cpus}
            reserved = ids & topo.reserved
            dedicated = {c for c in ids if c in held}
            free = ids - reserved - dedicated
            bound = sum(mib for a in allocs for c, mib in a.memory if c == cell.id)
            nodes.append({
                "node": cell.id, "cpus": len(ids), "reserved": len(reserved),
                "dedicated": len(dedicated), "free": len(free),
                "free_cpus": format_cpulist(free), "memory_mib": cell.memory_mib,
                "bound_mib": bound, "free_mib": cell.memory_mib - bound,
                "vms": sorted({held[c] for c in dedicated} | {
                    a.vm for a in allocs if any(c == cell.id for c, _ in a.memory)}),
            })
        shared = [a for a in allocs if a.policy == "shared"]
        pool = topo.cpu_ids - topo.reserved - set(held)
        return {"host": self.config.host, "nodes": nodes,
                "shared": {"vms": sorted(a.vm for a in shared),
                           "vcpus": sum(a.vcpus for a in shared), "cpus": len(pool),
                           "overcommit": self.config.cpu_overcommit}}

    def host_snapshot(self) -> dict[str, Any]:
        """Everything placement needs to decide without asking again: stats, the NUMA
        topology and what each VM holds."""
        from ppec.numa.serial import allocation_to_dict, topology_to_dict
        return {**self.host_info(), "taken_at": time.time(),
                "vms": self.vm_list()["vms"],
                "topology": topology_to_dict(self.topology()),
                "allocations": [allocation_to_dict(a) for a in self.ledger.allocations()],
                "cpu_overcommit": self.config.cpu_overcommit}

    def drift_check(self) -> dict[str, Any]:
        """Compare the ledger with libvirt now; record and return the open alerts."""
        found: list[drift.Alert] = []
        domains = {d.name: d for d in self.hv.domains()}
        records = {r.name: r for r in self.ledger.all()}
        for name, known in sorted(domains.items()):
            if name not in records and not self._ours(known):
                owner = f"ppec metadata of host {known.owner.host}" if known.owner else \
                    "no ppec metadata"
                found.append(drift.Alert(drift.FOREIGN_DOMAIN, name,
                                         f"{known.state}, {owner}; not touched"))
        held = {a.vm: (a.cpus, a.memory) for a in self.ledger.allocations()}
        for rec in records.values():
            if rec.state != "present":
                continue   # mid-create or mid-delete: recovery's business, not drift
            dom = domains.get(rec.name)
            if dom is None:
                found.append(drift.Alert(drift.DOMAIN_MISSING, rec.name,
                                         "in the ledger, gone from libvirt"))
                continue
            live_xml = self.hv.xml(rec.name)
            expected, optional = self._expected_disks(rec)
            found += drift.compare_vm(
                rec.name, rec.vcpus, rec.memory_mib, rec.power, dom.active,
                expected, optional, ET.fromstring(live_xml),
                ET.fromstring(self.hv.xml(rec.name, inactive=True)),
                held.get(rec.name) if rec.policy == "dedicated" else None,
                self._live_holdings(rec, live_xml) if rec.policy == "dedicated" else None)
        alerts = self.ledger.record_alerts((a.code, a.object, a.detail) for a in found)
        return {"host": self.config.host, "checked_at": utc_now(), "alerts": alerts}

    def vm_xml(self, name: str) -> dict[str, Any]:
        self.vm_get(name)   # the same ownership rule as every other read
        return {"name": name, "xml": self.hv.xml(name)}

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
            "address": dom.owner.address if dom and dom.owner else "",
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
                  image: str, numa: str = "shared", numa_nodes: int = 0,
                  threads: str = "prefer", emulator: str = "share",
                  network: dict[str, Any] | None = None,
                  boot: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.hv.find(name) is not None or self.ledger.get(name) is not None:
            raise AlreadyExists(f"a domain named {name} already exists on {self.config.host}")
        net = seed.check_network(network) if network is not None else None
        kernel = self._check_boot(boot) if boot is not None else None
        plan = self._fit(vcpus, memory_mib, numa, numa_nodes, threads, emulator)
        self.check_quota(disk_bytes)
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        # The VM's volumes are named after it; files by those names (a kept data volume,
        # say) are someone else's, and undo or delete would remove them.
        for derived in (self.storage_dir / f"{name}.qcow2", self._seed_path(name)):
            if derived.exists() or derived.is_symlink():
                raise AlreadyExists(f"{derived} already exists on {self.config.host}; a VM "
                                    f"named {name} would take it over", code="VOLUME_EXISTS")
        rec = VmRecord(name=name, uuid=str(uuid.uuid4()), state="creating", vcpus=vcpus,
                       memory_mib=memory_mib, disk_path=str(self.storage_dir / f"{name}.qcow2"),
                       disk_bytes=disk_bytes, image=image, power="running", created_at=utc_now(),
                       policy=numa, threads=threads, emulator=emulator, numa_nodes=numa_nodes)
        holding = plan.allocation(name, vcpus, memory_mib)
        self.ledger.begin_create(rec, holding.cpus, holding.memory)
        step = "create disk"
        made_disk = defined = False
        try:
            storage.create_volume(Path(rec.disk_path), disk_bytes, image,
                                  Path(self.config.image_dir))
            made_disk = True
            if net is not None:
                step = "build seed ISO"
                seed.build(self._seed_path(name), name, rec.uuid, net)
            step = "define domain"
            node = self.hv.node()
            self.hv.define(domxml.build_domain(domxml.DomainSpec(
                name=name, uuid=rec.uuid, domain_type=self.domain_type, arch=node.arch,
                vcpus=vcpus, memory_mib=memory_mib, disk_path=rec.disk_path,
                host=self.config.host, created=rec.created_at, emulator=self.config.emulator,
                plan=plan, numa=domxml.NumaPolicy(numa, threads, emulator,
                                                  str(numa_nodes or "auto")),
                seed_path=str(self._seed_path(name)) if net else "",
                address=net["address"] if net else "", boot=kernel,
                console_log=str(self._console_log(name)))))
            defined = True
            step = "start domain"
            self.hv.start(name)
        except Exception as e:
            log.warning("create %s failed at %s: %s; undoing", name, step, e)
            self._undo_create(rec, defined=defined, disk=made_disk)
            if not isinstance(e, PpecError):   # a timeout, an OSError: still one clean error
                raise PpecError(f"create {name} failed at step '{step}': {e}",
                                details={"step": step}) from None
            e.message = f"create {name} failed at step '{step}': {e.message}"
            e.details["step"] = step
            raise
        self.ledger.set_state(name, "present")
        if numa == "dedicated":
            self._repin_shared()
        return self.vm_get(name)

    def _seed_path(self, name: str) -> Path:
        # Derived from the name, so every undo and recovery path can find it.
        return self.storage_dir / f"{name}-seed.iso"

    def _console_log(self, name: str) -> Path:
        # Written by virtlogd (root), kept out of the storage dir, which holds volumes only.
        return Path(self.config.state_dir) / "console" / f"{name}.log"

    def _check_boot(self, boot: dict[str, Any]) -> domxml.KernelBoot:
        """Direct kernel boot: kernel and initrd from the image dir, like base images."""
        unknown = set(boot) - {"kernel", "initrd", "cmdline"}
        if unknown or not isinstance(boot.get("kernel"), str) or not all(
                isinstance(boot.get(k, ""), str) for k in ("initrd", "cmdline")):
            raise BadInput("boot must be {kernel: path, initrd: path, cmdline: text}",
                           code="BAD_PARAMS")
        image_dir = Path(self.config.image_dir)
        storage.check_image_path(boot["kernel"], image_dir, "kernel")
        if boot.get("initrd"):
            storage.check_image_path(boot["initrd"], image_dir, "initrd")
        if len(boot.get("cmdline", "")) > 4096:
            raise BadInput("kernel command line longer than 4096 characters")
        return domxml.KernelBoot(boot["kernel"], boot.get("initrd", ""),
                                 boot.get("cmdline", ""))

    def _fit(self, vcpus: int, memory_mib: int, policy: str, numa_nodes: int, threads: str,
             emulator: str) -> numa.Plan:
        request = numa.Request(vcpus=vcpus, memory_mib=memory_mib,
                               policy=policy,  # type: ignore[arg-type]  # checked by methods
                               numa_nodes=numa_nodes or None,
                               threads=threads,  # type: ignore[arg-type]
                               emulator=emulator)  # type: ignore[arg-type]
        plan = numa.fit(self.topology(), self.ledger.allocations(), request,
                        overcommit=self.config.cpu_overcommit)
        if isinstance(plan, numa.NoFit):
            raise NoCapacity(str(plan),
                             details={"reasons": list(plan.reasons)})
        return plan

    def _repin_shared(self) -> None:
        """Shared VMs float over the CPUs no dedicated VM holds; keep them off new pins."""
        topo = self.topology()
        allocs = self.ledger.allocations()
        pool = frozenset(topo.cpu_ids - topo.reserved - {c for a in allocs for c in a.cpus})
        host_cpus = max(topo.cpu_ids) + 1
        for a in allocs:
            if a.policy != "shared" or not self._ours(self.hv.find(a.vm)):
                continue
            try:
                self.hv.pin_float(a.vm, pool, host_cpus)
            except PpecError as e:   # the VM keeps running; its pins are reported as drift
                log.warning("could not re-pin shared VM %s to %s: %s", a.vm,
                            format_cpulist(pool), e)

    def _undo_create(self, rec: VmRecord, *, defined: bool, disk: bool = True) -> None:
        """Reverse a create step by step; each step tolerates the one before not having run."""
        if defined:
            for undo in (self.hv.destroy, self.hv.undefine):
                with contextlib.suppress(NotFound):
                    undo(rec.name)
        if disk:
            storage.remove_volume(Path(rec.disk_path), self.storage_dir)
        storage.remove_volume(self._seed_path(rec.name), self.storage_dir)
        storage.remove_logs(self._console_log(rec.name))
        self.ledger.remove(rec.name)

    def _owned(self, name: str) -> tuple[Domain | None, VmRecord]:
        dom, rec = self.hv.find(name), self.ledger.get(name)
        if rec is None and dom is None:
            raise NotFound(f"no VM named {name} on {self.config.host}")
        if rec is None or (dom is not None and not self._ours(dom)):
            # A stale ledger row must not make another domain of that name ours.
            raise Conflict(f"domain {name} on {self.config.host} was not created by this "
                           f"host's ppec agent; refusing to touch it", code="NOT_OWNED")
        return dom, rec

    def vm_delete(self, name: str) -> dict[str, Any]:
        dom, rec = self._owned(name)
        self.ledger.set_state(name, "deleting")
        kept = self._finish_delete(rec, dom)
        return {"name": name, "host": self.config.host, "deleted": True,
                "disk_path": rec.disk_path, "volumes_kept": kept}

    def _finish_delete(self, rec: VmRecord, dom: Domain | None) -> list[str]:
        if dom is not None:
            self.hv.destroy(rec.name)
            self.hv.undefine(rec.name)
        kept = self.remove_vm_disks(rec.name)
        storage.remove_volume(Path(rec.disk_path), self.storage_dir)
        storage.remove_volume(self._seed_path(rec.name), self.storage_dir)
        storage.remove_logs(self._console_log(rec.name))
        self.ledger.remove(rec.name)
        if rec.policy == "dedicated":
            self._repin_shared()
        return kept

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
    # Console logs may show what a guest printed (passwords typed at a prompt): root only.
    os.makedirs(Path(config.state_dir) / "console", mode=0o700, exist_ok=True)
