"""Drift: the ledger against libvirt, now; the open alerts are kept in the ledger."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from ppec.agent import drift, recovery, verify
from ppec.agent.context import AgentContext
from ppec.agent.images import ImageStore
from ppec.agent.ledger import VmRecord
from ppec.agent.releases import Releases
from ppec.agent.vmops import VmOps
from ppec.core.clock import utc_now
from ppec.wire import bundle as pkgfiles


class DriftHandlers:
    def __init__(self, ctx: AgentContext, ops: VmOps) -> None:
        self.ctx = ctx
        self.ops = ops
        self.volumes = ops.volumes
        self.releases = Releases(ctx.config.state_dir, pkgfiles.package_root().name)
        # The images' last hashes: the daemon's verify thread fills it, check() reads it.
        self.images = verify.ImageWatch(ImageStore.of(ctx.config))

    def check(self) -> dict[str, Any]:
        """Compare the ledger with libvirt now; record and return the open alerts."""
        ctx = self.ctx
        # A migration the operator's CLI did not see to its end is settled here: a claim
        # past its deadline given up, a VM that runs on its target forgotten.
        recovery.settle_moves(ctx, self.ops)
        found: list[drift.Alert] = []
        domains = {d.name: d for d in ctx.hv.domains()}
        records = {r.name: r for r in ctx.ledger.all()}
        for name, known in sorted(domains.items()):
            if name not in records and not ctx.ours(known):
                owner = f"ppec metadata of host {known.owner.host}" if known.owner else \
                    "no ppec metadata"
                found.append(drift.Alert(drift.FOREIGN_DOMAIN, name,
                                         f"{known.state}, {owner}; not touched"))
        held = {a.vm: (a.cpus, a.memory) for a in ctx.ledger.allocations()}
        for rec in records.values():
            if rec.state != "present":
                continue   # mid-create or mid-delete: recovery's business, not drift
            dom = domains.get(rec.name)
            if dom is None:
                found.append(drift.Alert(drift.DOMAIN_MISSING, rec.name,
                                         "in the ledger, gone from libvirt"))
                continue
            live_xml = ctx.hv.xml(rec.name)
            live, config = ET.fromstring(live_xml), ET.fromstring(
                ctx.hv.xml(rec.name, inactive=True))
            expected, optional = self.volumes.expected(rec)
            dedicated = rec.policy == "dedicated"
            found += drift.compare_vm(
                rec.name, rec.vcpus, rec.memory_mib, rec.power, dom.active,
                expected, optional, live, config,
                held.get(rec.name) if dedicated else None,
                ctx.live_holdings(rec, live_xml) if dedicated else None)
            if rec.spec:   # VMs built before NICs were recorded have nothing to compare
                found += drift.compare_nics(rec.name, self._nic_sources(rec), dom.active,
                                            live, config)
                found += drift.compare_backing(rec.name, rec.hugepages, dom.active, live,
                                               config)
        # The agent's own files (ppec.agent.verify): the same alert list, the same ledger.
        own = verify.check(ctx, self.releases)
        # Its base images: the last hash of each (taken every verify_interval in a thread
        # of its own, never here) and the ledger's VMs on them.
        images = self.images.alerts(list(records.values()))
        alerts = ctx.ledger.record_alerts([*((a.code, a.object, a.detail) for a in found),
                                           *own, *images])
        return {"host": ctx.host, "checked_at": utc_now(), "alerts": alerts}

    def _nic_sources(self, rec: VmRecord) -> dict[str, str]:
        """MAC -> the bridge or device the NIC's VRF maps to in this agent's config."""
        out = {}
        for nic in rec.nics:
            net = self.ctx.config.network(nic["vrf"])
            out[str(nic["mac"])] = net.source if net else f"(no network for VRF {nic['vrf']})"
        return out
