"""Steps of a VM's life that more than one path takes: fitting, undoing a create,
finishing a delete, re-pinning the shared VMs. The VM handlers use them, and so does
start-up recovery for what a crash interrupted."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path

from ppec import numa
from ppec.agent import hugepages, storage
from ppec.agent.context import AgentContext
from ppec.agent.hypervisor import Domain
from ppec.agent.ledger import VmRecord
from ppec.agent.volumes import Volumes
from ppec.core.errors import AlreadyExists, NoCapacity, NotFound, PpecError
from ppec.numa.topology import format_cpulist
from ppec.wire.vmspec import Shape, VmSpec

log = logging.getLogger(__name__)


class VmOps:
    def __init__(self, ctx: AgentContext, volumes: Volumes) -> None:
        self.ctx = ctx
        self.volumes = volumes

    def fit(self, shape: Shape) -> numa.Plan:
        """Where the VM's vCPUs and memory go on this host, or NO_CAPACITY with reasons."""
        pin = shape.pinning
        request = numa.Request(vcpus=shape.vcpus, memory_mib=shape.memory_mib,
                               policy=pin.policy, numa_nodes=pin.nodes or None,
                               threads=pin.threads, emulator=pin.emulator)
        topo = self.ctx.topology()
        reserved = hugepages.pools([c.id for c in topo.cells],
                                   Path(self.ctx.config.hugepages_sysfs))
        backed = {r.name: page for r in self.ctx.ledger.all() if (page := r.hugepages)}
        topo, allocs = hugepages.view(topo, self.ctx.ledger.allocations(), pin.hugepages,
                                      reserved, backed)
        plan = numa.fit(topo, allocs, request, overcommit=self.ctx.config.cpu_overcommit)
        if isinstance(plan, numa.NoFit):
            reasons = list(plan.reasons)
            if pin.hugepages:
                reasons.insert(0, hugepages.shortage(topo, allocs, pin.hugepages,
                                                     shape.memory_mib))
            raise NoCapacity(f"{self.ctx.host}: {'; '.join(reasons)}" if pin.hugepages
                             else str(plan), details={"reasons": reasons})
        odd = [c for c in plan.cells if c.memory_mib * 1024 % (pin.hugepages or 1)]
        if odd:
            raise NoCapacity(f"{self.ctx.host}: the fit splits {shape.memory_mib} MiB into "
                             f"{', '.join(str(c.memory_mib) for c in plan.cells)} MiB per "
                             f"node, not whole {pin.hugepages} KiB pages; give --numa-nodes "
                             f"or a memory that splits into whole pages")
        return plan

    def on_this_host(self, spec: VmSpec) -> VmSpec:
        """Catalogue images (``sha256:…``) as the paths this host holds them at."""
        image_dir = Path(self.ctx.config.image_dir)
        boot = spec.boot and dataclasses.replace(
            spec.boot, kernel=storage.image_path(spec.boot.kernel, image_dir, "kernel"),
            initrd=storage.image_path(spec.boot.initrd, image_dir, "initrd")
            if spec.boot.initrd else "")
        return dataclasses.replace(spec, image=storage.image_path(spec.image, image_dir)
                                   if spec.image else "", boot=boot)

    def check_new(self, spec: VmSpec) -> None:
        """Refusals before anything is written."""
        name, ctx = spec.name, self.ctx
        if ctx.hv.find(name) is not None or ctx.ledger.get(name) is not None:
            raise AlreadyExists(f"a domain named {name} already exists on {ctx.host}")
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

    def repin_shared(self) -> None:
        """Shared VMs float over the CPUs no dedicated VM holds; keep them off new pins."""
        topo = self.ctx.topology()
        allocs = self.ctx.ledger.allocations()
        pool = frozenset(topo.cpu_ids - topo.reserved - {c for a in allocs for c in a.cpus})
        host_cpus = max(topo.cpu_ids) + 1
        for a in allocs:
            if a.policy != "shared" or not self.ctx.ours(self.ctx.hv.find(a.vm)):
                continue
            try:
                self.ctx.hv.pin_float(a.vm, pool, host_cpus)
            except PpecError as e:   # the VM keeps running; its pins are reported as drift
                log.warning("could not re-pin shared VM %s to %s: %s", a.vm,
                            format_cpulist(pool), e)

    def undo_create(self, rec: VmRecord, *, defined: bool, disk: bool = True) -> None:
        """Reverse a create step by step; each step tolerates the one before not having run."""
        if defined:
            for undo in (self.ctx.hv.destroy, self.ctx.hv.undefine):
                with contextlib.suppress(NotFound):
                    undo(rec.name)
        self._remove_files(rec, root_disk=disk)
        self.ctx.ledger.remove(rec.name)

    def finish_delete(self, rec: VmRecord, dom: Domain | None) -> list[str]:
        """Domain, volumes, seed, logs and row; returns the data volumes kept."""
        if dom is not None:
            self.ctx.hv.destroy(rec.name)
            self.ctx.hv.undefine(rec.name)
        kept = self.volumes.remove_vm_disks(rec.name)
        self._remove_files(rec, root_disk=True)
        self.ctx.ledger.remove(rec.name)
        if rec.policy == "dedicated":
            self.repin_shared()
        return kept

    def _remove_files(self, rec: VmRecord, *, root_disk: bool) -> None:
        storage_dir = self.ctx.storage_dir
        if root_disk:
            storage.remove_volume(Path(rec.disk_path), storage_dir)
        storage.remove_volume(self.ctx.seed_path(rec.name), storage_dir)
        storage.remove_logs(self.ctx.console_log(rec.name))
