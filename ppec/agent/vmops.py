"""Steps of a VM's life that more than one path takes: fitting, undoing a create,
finishing a delete, re-pinning the shared VMs. The VM handlers use them, and so does
start-up recovery for what a crash interrupted."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from ppec import numa
from ppec.agent import storage
from ppec.agent.context import AgentContext
from ppec.agent.hypervisor import Domain
from ppec.agent.ledger import VmRecord
from ppec.agent.volumes import Volumes
from ppec.core.errors import NoCapacity, NotFound, PpecError
from ppec.numa.topology import format_cpulist
from ppec.wire.vmspec import Shape

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
        plan = numa.fit(self.ctx.topology(), self.ctx.ledger.allocations(), request,
                        overcommit=self.ctx.config.cpu_overcommit)
        if isinstance(plan, numa.NoFit):
            raise NoCapacity(str(plan), details={"reasons": list(plan.reasons)})
        return plan

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
