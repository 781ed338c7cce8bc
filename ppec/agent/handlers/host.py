"""The host as placement sees it: liveness, stats, NUMA cells and a full snapshot."""

from __future__ import annotations

import platform
import shutil
import time
from pathlib import Path
from typing import Any

import psutil

import ppec
from ppec.agent import hugepages, networks
from ppec.agent.config import parse_cpu_list
from ppec.agent.context import AgentContext
from ppec.agent.handlers.stats import UseMeter
from ppec.agent.handlers.vms import VmHandlers
from ppec.agent.images import ImageStore
from ppec.core.errors import PpecError
from ppec.numa.topology import format_cpulist


class HostHandlers:
    def __init__(self, ctx: AgentContext, vms: VmHandlers) -> None:
        self.ctx = ctx
        self.vms = vms
        self.meter = UseMeter(ctx)

    def ping(self) -> dict[str, Any]:
        return {"host": self.ctx.host, "version": ppec.__version__, "time": time.time(),
                "digest": self.ctx.digest, "failed_releases": self.ctx.failed_releases}

    def info(self) -> dict[str, Any]:
        ctx, config = self.ctx, self.ctx.config
        node = ctx.hv.node()
        mem = psutil.virtual_memory()
        disk = shutil.disk_usage(ctx.storage_dir)
        vms = ctx.ledger.all()
        return {
            "host": config.host,
            "agent_version": ppec.__version__,
            "uptime_s": round(time.time() - ctx.started, 1),
            "kernel": platform.release(),
            "libvirt_uri": config.libvirt_uri,
            "libvirt_version": node.libvirt_version,
            "hypervisor": node.hypervisor,
            "domain_type": ctx.domain_type,
            "cpus": node.cpus,
            "reserved_cpus": sorted(parse_cpu_list(config.reserved_cpus)),
            # The NUMA cells' memory where libvirt reports cells (what the fit uses).
            "memory_mib": sum(c.memory_mib for c in ctx.topology().cells)
            + config.reserved_memory_mib,
            "reserved_memory_mib": config.reserved_memory_mib,
            "committed_memory_mib": sum(v.memory_mib for v in vms),
            "committed_vcpus": sum(v.vcpus for v in vms),
            "dedicated_cpus": sum(len(a.cpus) for a in ctx.ledger.allocations()),
            "numa_nodes": len(ctx.topology().cells),
            "os_memory_available_mib": mem.available >> 20,
            "cpu_percent": psutil.cpu_percent(interval=None),
            "storage_dir": str(ctx.storage_dir),
            "disk_tuning": ctx.disk_tuning.as_dict(),
            "storage_free_bytes": disk.free,
            "storage_total_bytes": disk.total,
            "vm_count": len(vms),
            "kvm_unusable": ctx.kvm_unusable,   # why auto chose TCG, if it did
            "cpu_mode": ctx.cpu_mode,
            "cpu_model": ctx.host_model,     # host-model resolved here (KVM only)
            "vhost_net": networks.vhost_available(),
            "networks": networks.states(config),
            # Base images held here and the VMs on each (a listing and the ledger: no
            # hashing).
            "images": ImageStore.of(config).held_by(vms),
        }

    def numa(self) -> dict[str, Any]:
        topo = self.ctx.topology()
        allocs = self.ctx.ledger.allocations()
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
                "hugepages": hugepages.per_node(cell.id, Path(self.ctx.config.hugepages_sysfs)),
            })
        shared = [a for a in allocs if a.policy == "shared"]
        pool = topo.cpu_ids - topo.reserved - set(held)
        return {"host": self.ctx.host, "nodes": nodes,
                "shared": {"vms": sorted(a.vm for a in shared),
                           "vcpus": sum(a.vcpus for a in shared), "cpus": len(pool),
                           "overcommit": self.ctx.config.cpu_overcommit}}

    def snapshot(self) -> dict[str, Any]:
        """Everything placement needs to decide without asking again: stats, the NUMA
        topology, what each VM holds and what it uses (``vm_use``: CPU and RSS of each VM
        since the previous snapshot, see ppec.wire.vmstats)."""
        from ppec.numa.serial import allocation_to_dict, topology_to_dict
        vms = self.vms.list_all()["vms"]
        return {**self.info(), "taken_at": time.time(), "vms": vms,
                "topology": topology_to_dict(self.ctx.topology()),
                "allocations": [allocation_to_dict(a) for a in self.ctx.ledger.allocations()],
                "cpu_overcommit": self.ctx.config.cpu_overcommit,
                "vm_use": self._use(vms)}

    def _use(self, vms: list[dict[str, Any]]) -> dict[str, Any]:
        # Measured use is extra: a libvirt hiccup reading it must not cost placement the
        # whole snapshot (readers treat a vm_use without figures as not measured).
        try:
            return self.meter.use(vms)
        except PpecError as e:
            return {"error": {"code": e.code, "message": str(e)}}
