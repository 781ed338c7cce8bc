"""VMs: list and read (no lock), create, delete, start and stop (under the host lock).

A create is written to the ledger ('creating', with the CPUs and memory it will hold)
before its first side effect, and every step after it is undone on failure; a crash in
between is finished or undone at start-up (``ppec.agent.recovery``).
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from ppec import numa
from ppec.agent import domxml, seed, storage
from ppec.agent.context import AgentContext
from ppec.agent.hypervisor import Domain
from ppec.agent.ledger import VmRecord
from ppec.agent.vmops import VmOps
from ppec.core.clock import utc_now
from ppec.core.errors import AlreadyExists, Conflict, NotFound, PpecError
from ppec.wire.vmspec import VmSpec

log = logging.getLogger(__name__)


class VmHandlers:
    def __init__(self, ctx: AgentContext, ops: VmOps) -> None:
        self.ctx = ctx
        self.ops = ops

    # -- reading ----------------------------------------------------------------------------

    def _view(self, dom: Domain | None, rec: VmRecord | None) -> dict[str, Any]:
        """One VM as operators see it: libvirt's live state, the ledger's ownership facts."""
        if rec is None:
            assert dom is not None
            rec = VmRecord(dom.name, dom.uuid, "absent", dom.vcpus, dom.memory_mib,
                           dom.disks[0] if dom.disks else "", 0, "", "", dom.owner.created
                           if dom.owner else "")
        return {
            "name": rec.name, "host": self.ctx.host, "uuid": rec.uuid,
            "state": dom.state if dom else "missing",
            "vcpus": dom.vcpus if dom else rec.vcpus,
            "memory_mib": dom.memory_mib if dom else rec.memory_mib,
            "disk_path": rec.disk_path, "disk_bytes": rec.disk_bytes, "image": rec.image,
            "created_at": rec.created_at, "ledger": rec.state,
            "address": dom.owner.address if dom and dom.owner else "",
        }

    def list_all(self) -> dict[str, Any]:
        domains = {d.name: d for d in self.ctx.hv.domains()}
        records = {r.name: r for r in self.ctx.ledger.all()}
        names = sorted(n for n in set(domains) | set(records)
                       if n in records or self.ctx.ours(domains[n]))
        return {"vms": [self._view(domains.get(n), records.get(n)) for n in names],
                "foreign": sorted(n for n, d in domains.items()
                                  if not self.ctx.ours(d) and n not in records)}

    def get(self, name: str) -> dict[str, Any]:
        dom, rec = self.ctx.hv.find(name), self.ctx.ledger.get(name)
        if rec is None and not self.ctx.ours(dom):
            raise NotFound(f"no VM named {name} on {self.ctx.host}")
        return self._view(dom, rec)

    def xml(self, name: str) -> dict[str, Any]:
        self.get(name)   # the same ownership rule as every other read
        return {"name": name, "xml": self.ctx.hv.xml(name)}

    # -- create -----------------------------------------------------------------------------

    def create(self, **params: Any) -> dict[str, Any]:
        """``params`` is the wire form of a ``VmSpec`` (checked by the method table)."""
        spec = VmSpec.from_params(params)
        net = self._check_new(spec)
        plan = self.ops.fit(spec.shape)
        self.ops.volumes.check_quota(spec.shape.disk_bytes)
        rec = VmRecord.creating(spec, uuid=str(uuid.uuid4()), created_at=utc_now(),
                                disk_path=str(self.ctx.storage_dir / f"{spec.name}.qcow2"))
        holding = plan.allocation(spec.name, spec.shape.vcpus, spec.shape.memory_mib)
        self.ctx.ledger.begin_create(rec, holding.cpus, holding.memory)
        self._build(spec, rec, plan, net)
        self.ctx.ledger.set_state(spec.name, "present")
        if spec.shape.pinning.policy == "dedicated":
            self.ops.repin_shared()
        return self.get(spec.name)

    def _check_new(self, spec: VmSpec) -> dict[str, Any] | None:
        """Refusals before anything is written; returns the checked network, if any."""
        name, ctx = spec.name, self.ctx
        if ctx.hv.find(name) is not None or ctx.ledger.get(name) is not None:
            raise AlreadyExists(f"a domain named {name} already exists on {ctx.host}")
        net = seed.check_network(dict(spec.network)) if spec.network is not None else None
        if spec.boot is not None:
            # Direct kernel boot: kernel and initrd from the image dir, like base images.
            image_dir = Path(ctx.config.image_dir)
            storage.check_image_path(spec.boot.kernel, image_dir, "kernel")
            if spec.boot.initrd:
                storage.check_image_path(spec.boot.initrd, image_dir, "initrd")
        ctx.storage_dir.mkdir(parents=True, exist_ok=True)
        # The VM's volumes are named after it; files by those names (a kept data volume,
        # say) are someone else's, and undo or delete would remove them.
        for derived in (ctx.storage_dir / f"{name}.qcow2", ctx.seed_path(name)):
            if derived.exists() or derived.is_symlink():
                raise AlreadyExists(f"{derived} already exists on {ctx.host}; a VM "
                                    f"named {name} would take it over", code="VOLUME_EXISTS")
        return net

    def _build(self, spec: VmSpec, rec: VmRecord, plan: numa.Plan,
               net: dict[str, Any] | None) -> None:
        """Disk, seed, domain, start: each undone if a later one fails."""
        ctx, name = self.ctx, spec.name
        step = "create disk"
        made_disk = defined = False
        try:
            storage.create_volume(Path(rec.disk_path), spec.shape.disk_bytes, spec.image,
                                  Path(ctx.config.image_dir))
            made_disk = True
            if net is not None:
                step = "build seed ISO"
                seed.build(ctx.seed_path(name), name, rec.uuid, net)
            step = "define domain"
            ctx.hv.define(domxml.build_domain(domxml.DomainSpec.for_vm(
                spec, uuid=rec.uuid, domain_type=ctx.domain_type, arch=ctx.hv.node().arch,
                disk_path=rec.disk_path, host=ctx.host, created=rec.created_at,
                emulator=ctx.config.emulator, plan=plan,
                seed_path=str(ctx.seed_path(name)) if net else "",
                console_log=str(ctx.console_log(name)))))
            defined = True
            step = "start domain"
            ctx.hv.start(name)
        except Exception as e:
            log.warning("create %s failed at %s: %s; undoing", name, step, e)
            self.ops.undo_create(rec, defined=defined, disk=made_disk)
            if not isinstance(e, PpecError):   # a timeout, an OSError: still one clean error
                raise PpecError(f"create {name} failed at step '{step}': {e}",
                                details={"step": step}) from None
            e.message = f"create {name} failed at step '{step}': {e.message}"
            e.details["step"] = step
            raise

    # -- delete, start, stop ----------------------------------------------------------------

    def delete(self, name: str) -> dict[str, Any]:
        dom, rec = self.ctx.owned(name)
        self.ctx.ledger.set_state(name, "deleting")
        kept = self.ops.finish_delete(rec, dom)
        return {"name": name, "host": self.ctx.host, "deleted": True,
                "disk_path": rec.disk_path, "volumes_kept": kept}

    def _present(self, name: str) -> Domain:
        dom, _ = self.ctx.owned(name)
        if dom is None:
            raise Conflict(f"VM {name} is in the ledger but libvirt has no such domain",
                           code="MISSING")
        return dom

    def start(self, name: str) -> dict[str, Any]:
        if not self._present(name).active:
            self.ctx.hv.start(name)
        self.ctx.ledger.set_power(name, "running")
        return self.get(name)

    def stop(self, name: str, force: bool, timeout: int) -> dict[str, Any]:
        if self._present(name).active:
            if force:
                self.ctx.hv.destroy(name)
            else:
                self.ctx.hv.shutdown(name)
                if not self.ctx.hv.wait_inactive(name, timeout):
                    raise Conflict(f"VM {name} did not shut down within {timeout}s (the guest "
                                   f"ignored the ACPI request); use --force to power it off",
                                   code="STOP_TIMEOUT")
        self.ctx.ledger.set_power(name, "shut-off")
        return self.get(name)
