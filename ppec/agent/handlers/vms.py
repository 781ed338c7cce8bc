"""VMs: list and read (no lock), create, delete, start and stop (under the host lock).

A create is written to the ledger ('creating', with the CPUs and memory it will hold)
before its first side effect, and every step after it is undone on failure; a crash in
between is finished or undone at start-up (``ppec.agent.recovery``).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ppec.agent import domxml, networks, seed, steps, storage, tuningview
from ppec.agent.config import AgentConfig
from ppec.agent.context import AgentContext
from ppec.agent.hypervisor import Domain
from ppec.agent.ledger import VmRecord
from ppec.agent.vmops import VmOps
from ppec.core.clock import utc_now
from ppec.core.errors import Conflict, NotFound, PpecError
from ppec.wire.vmspec import VmSpec

log = logging.getLogger(__name__)


def nic_views(nics: list[dict[str, Any]], live: tuple[domxml.InterfaceInfo, ...],
              config: AgentConfig) -> list[dict[str, Any]]:
    """The VM's NICs as views show them: what ppec gave it (the ledger's document) with
    what the domain has now (device, model, queues, the tap while it runs)."""
    by_mac = {i.mac: i for i in live}
    out = []
    for nic in nics:
        iface = by_mac.get(nic["mac"])
        net = config.network(nic["vrf"])
        out.append({
            "mac": nic["mac"], "vrf": nic["vrf"], "network": net.name if net else "",
            "bridge": iface.source if iface else (net.source if net else ""),
            "address": nic["address"], "model": iface.model if iface else "",
            "queues": iface.queues if iface else 0,
            "target": iface.target if iface else ""})
    return out


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
        nics = nic_views(rec.nics, dom.interfaces if dom else (), self.ctx.config)
        return {
            "name": rec.name, "host": self.ctx.host, "uuid": rec.uuid,
            "state": dom.state if dom else "missing",
            "vcpus": dom.vcpus if dom else rec.vcpus,
            "memory_mib": dom.memory_mib if dom else rec.memory_mib,
            "disk_path": rec.disk_path, "disk_bytes": rec.disk_bytes, "image": rec.image,
            "created_at": rec.created_at, "ledger": rec.state,
            "address": nics[0]["address"] if nics else
            (dom.owner.address if dom and dom.owner else ""),
            "nics": nics,
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

    def tuning(self, name: str) -> dict[str, Any]:
        """What the host applied: live XML and the QEMU process's /proc."""
        vm = self.get(name)
        return {**tuningview.view(name, self.ctx.hv.xml(name), int(vm["memory_mib"]) * 1024),
                "host": self.ctx.host, "disk_tuning": self.ctx.disk_tuning.as_dict()}

    # -- create -----------------------------------------------------------------------------

    def create(self, **params: Any) -> dict[str, Any]:
        """``params`` is the wire form of a ``VmSpec`` (checked by the method table)."""
        stored = VmSpec.from_params(params)   # as the document keeps it (catalogue refs)
        ctx = self.ctx
        spec = self.ops.on_this_host(stored)
        self.ops.check_new(spec)
        interfaces = networks.resolve(ctx.config, ctx.host, spec.nics, spec.shape.vcpus,
                                      ctx.domain_type)
        plan = self.ops.fit(spec.shape)
        self.ops.volumes.check_quota(spec.shape.disk_bytes)
        rec = VmRecord.creating(stored, uuid=str(uuid.uuid4()), created_at=utc_now(),
                                disk_path=str(ctx.storage_dir / f"{spec.name}.qcow2"))
        docs = seed.documents(spec.name, rec.uuid, [
            (nic, iface.mtu) for nic, iface in zip(spec.nics, interfaces, strict=True)],
            spec.ssh_keys, spec.user_data)
        xml = domxml.build_domain(domxml.DomainSpec.for_vm(
            spec, self._facts(spec.name), uuid=rec.uuid, created=rec.created_at,
            disk_path=rec.disk_path, plan=plan, interfaces=interfaces))
        holding = plan.allocation(spec.name, spec.shape.vcpus, spec.shape.memory_mib)
        ctx.ledger.begin_create(rec, holding.cpus, holding.memory)
        try:
            steps.run(f"create {spec.name}", self._steps(spec, rec, docs, xml))
        except PpecError:
            storage.remove_logs(ctx.console_log(spec.name))
            ctx.ledger.remove(spec.name)
            raise
        ctx.ledger.set_state(spec.name, "present")
        if spec.shape.pinning.policy == "dedicated":
            self.ops.repin_shared()
        return {**self.get(spec.name), "spec": rec.document}

    def _facts(self, name: str) -> domxml.HostFacts:
        ctx = self.ctx
        return domxml.HostFacts(
            name=ctx.host, domain_type=ctx.domain_type, arch=ctx.hv.node().arch,
            cpu_mode=ctx.cpu_mode, emulator=ctx.config.emulator,
            seed_path=str(ctx.seed_path(name)), console_log=str(ctx.console_log(name)),
            disk=ctx.disk_tuning)

    def _steps(self, spec: VmSpec, rec: VmRecord, docs: dict[str, str], xml: str
               ) -> list[steps.Step]:
        """Disk, seed, domain, start, each beside its undo."""
        ctx, name = self.ctx, spec.name
        disk, seed_iso = Path(rec.disk_path), ctx.seed_path(name)

        def quietly(undo: Callable[[str], None]) -> Callable[[], None]:
            def run() -> None:
                with contextlib.suppress(NotFound):
                    undo(name)
            return run
        return [
            steps.Step("create disk",
                       lambda: storage.create_volume(disk, spec.shape.disk_bytes, spec.image,
                                                     Path(ctx.config.image_dir)),
                       lambda: storage.remove_volume(disk, ctx.storage_dir)),
            steps.Step("build seed ISO", lambda: seed.build(seed_iso, docs),
                       lambda: storage.remove_volume(seed_iso, ctx.storage_dir)),
            steps.Step("define domain", lambda: ctx.hv.define(xml),
                       quietly(ctx.hv.undefine)),
            steps.Step("start domain", lambda: ctx.hv.start(name), quietly(ctx.hv.destroy)),
        ]

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
