"""The target's side of a migration: the claim, the files libvirt will not make, and
taking the VM once it runs here (docs/migration.md).

A claim is a ledger row in state ``incoming`` holding the CPUs, memory, MACs and data
disks the VM will have here, written under the host lock before any file is made (as a
create's ``creating`` row is). It ends one of two ways: the guest runs here (``present``:
this ledger owns it), or it never came (the row, the files and the claim go). A claim with
no guest past its deadline is given up by whoever settles it next: start-up recovery, the
drift check, the next claim of the name, or the operator's retry.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import logging
import time
import xml.etree.ElementTree as ET
from functools import partial
from pathlib import Path
from typing import Any

from ppec.agent import domxml, fault, hvmigrate, migxml, networks, steps, storage
from ppec.agent.context import AgentContext
from ppec.agent.ledger import DiskRecord, VmRecord
from ppec.agent.vmops import VmOps
from ppec.core.clock import utc_now
from ppec.core.errors import BadInput, Conflict
from ppec.wire.vmspec import VmSpec

log = logging.getLogger(__name__)
MAX_SEED = 4 << 20     # the seed ISO, decompressed


def seed_bytes(text: str) -> bytes:
    try:
        data = gzip.decompress(base64.b64decode(text, validate=True))
    except (ValueError, OSError, EOFError) as e:
        raise BadInput(f"seed: not gzip in base64 ({e})", code="BAD_PARAMS") from None
    if len(data) > MAX_SEED:
        raise BadInput(f"seed: {len(data)} bytes, more than {MAX_SEED}", code="BAD_PARAMS")
    return data


@dataclasses.dataclass(frozen=True)
class Claim:
    """What ``vm.incoming`` was asked to take (checked parameters)."""

    name: str
    document: dict[str, Any]
    uuid: str
    created_at: str
    xml: str
    disks: list[dict[str, Any]]
    seed: bytes
    source: str
    wait: float           # seconds the claim waits for its guest


class Incoming:
    def __init__(self, ctx: AgentContext, ops: VmOps) -> None:
        self.ctx = ctx
        self.ops = ops

    def claim(self, c: Claim) -> dict[str, Any]:
        """Hold what the VM needs here and prepare its files; the destination XML."""
        ctx = self.ctx
        if not ctx.config.migration_uri:
            raise Conflict(f"{ctx.host} takes no migrations: its agent config has no "
                           f"migration_uri", code="MIGRATION_NOT_CONFIGURED")
        self.settle(c.name, abandon=True)     # an earlier claim of the name, given up
        stored = VmSpec.from_document(c.document)
        spec = self.ops.on_this_host(stored)   # IMAGE_MISSING before anything is held
        self.ops.check_new(spec)
        interfaces = networks.resolve(ctx.config, ctx.host, spec.nics, spec.shape.vcpus,
                                      ctx.domain_type)
        try:
            cells = domxml.guest_cells(ET.fromstring(c.xml))
        except ET.ParseError as e:
            raise BadInput(f"xml: not the source's domain XML ({e})",
                           code="BAD_PARAMS") from None
        shape = spec.shape
        if shape.pinning.policy == "dedicated" and cells:   # keep the guest's cell count
            shape = dataclasses.replace(shape, pinning=dataclasses.replace(
                shape.pinning, nodes=len(cells)))
        plan = self.ops.fit(shape)
        disks = self._disks(c)
        self.ops.volumes.check_quota(shape.disk_bytes + sum(d.bytes for d in disks))
        rec = VmRecord(
            name=c.name, uuid=c.uuid, state="incoming", vcpus=shape.vcpus,
            memory_mib=shape.memory_mib, disk_path=str(ctx.storage_dir / f"{c.name}.qcow2"),
            disk_bytes=shape.disk_bytes, image=stored.image, power="running",
            created_at=c.created_at, policy=shape.pinning.policy,
            threads=shape.pinning.threads, emulator=shape.pinning.emulator,
            numa_nodes=stored.shape.pinning.nodes,
            spec=json.dumps(c.document, sort_keys=True),
            migration=json.dumps({"peer": c.source, "deadline": time.time() + c.wait},
                                 sort_keys=True))
        xml = migxml.destination(c.xml, migxml.Target(
            host=ctx.host, plan=plan,
            disks={"vda": rec.disk_path, "hdc": str(ctx.seed_path(c.name)),
                   **{d.target: d.path for d in disks}},
            interfaces={i.mac: i for i in interfaces},
            console_log=str(ctx.console_log(c.name)), emulator=ctx.config.emulator,
            disk=ctx.disk_tuning))
        holding = plan.allocation(c.name, shape.vcpus, shape.memory_mib)
        ctx.ledger.begin_create(rec, holding.cpus, holding.memory, disks)
        fault.checkpoint(ctx.config, "incoming-claimed")
        try:
            steps.run(f"prepare {c.name} for migration", self._steps(spec, rec, disks, c.seed))
        except Exception:
            ctx.ledger.remove(c.name)
            raise
        fault.checkpoint(ctx.config, "incoming-prepared")
        log.info("%s: claimed for a migration from %s: CPUs %s", c.name, c.source,
                 sorted(holding.cpus) or "shared")
        return {"name": c.name, "host": ctx.host, "xml": xml,
                "uri": ctx.config.migration_uri, "address": ctx.config.migration_address,
                "tls": ctx.config.migration_tls, "cpus": sorted(holding.cpus),
                "memory": [list(m) for m in holding.memory]}

    def _disks(self, c: Claim) -> list[DiskRecord]:
        out = []
        for d in c.disks:
            if not d.get("owned"):
                raise BadInput(f"disk {d.get('target')} of {c.name} was attached from an "
                               f"existing volume (--path); detach it before migrating",
                               code="DISK_EXTERNAL")
            if d.get("format") != "qcow2":
                raise BadInput(f"disk {d.get('target')}: format {d.get('format')!r}; ppec "
                               f"migrates qcow2 volumes", code="BAD_PARAMS")
            path = self.ctx.storage_dir / Path(str(d["path"])).name
            out.append(DiskRecord(vm=c.name, target=str(d["target"]), path=str(path),
                                  bytes=int(d["bytes"]), bus=str(d["bus"]), format="qcow2",
                                  owned=True, keep=False, state="attached",
                                  created_at=str(d.get("created_at") or utc_now())))
        return out

    def _steps(self, spec: VmSpec, rec: VmRecord, disks: list[DiskRecord], seed: bytes
               ) -> list[steps.Step]:
        ctx = self.ctx
        root, seed_iso = Path(rec.disk_path), ctx.seed_path(spec.name)
        image_dir = Path(ctx.config.image_dir)

        def write_seed() -> None:
            with seed_iso.open("xb") as f:
                f.write(seed)
            seed_iso.chmod(0o644)

        made = [steps.Step("create disk",
                           lambda: storage.create_volume(root, spec.shape.disk_bytes,
                                                         spec.image, image_dir),
                           lambda: storage.remove_volume(root, ctx.storage_dir))]
        if seed:
            made.append(steps.Step("write seed ISO", write_seed,
                                   lambda: storage.remove_volume(seed_iso, ctx.storage_dir)))
        made += [steps.Step(f"create disk {d.target}",
                            partial(storage.create_volume, Path(d.path), d.bytes),
                            partial(storage.remove_volume, Path(d.path), ctx.storage_dir))
                 for d in disks]
        return made

    def settle(self, name: str, abandon: bool = False) -> dict[str, Any]:
        """Take the VM when its guest runs here; give the claim up when the guest never
        came (``abandon``: the operator knows it will not; else past its deadline)."""
        ctx = self.ctx
        rec = ctx.ledger.get(name)
        if rec is None or rec.state != "incoming":
            return {"name": name, "host": ctx.host,
                    "state": rec.state if rec else "none"}
        dom = ctx.hv.find(name)
        if dom is not None and ctx.ours(dom) and dom.active:
            if hvmigrate.paused_for_migration(ctx.hv, name):
                return {"name": name, "host": ctx.host, "state": "moving"}
            fault.checkpoint(ctx.config, "incoming-settle")
            ctx.ledger.set_move(name, "present", None)
            if rec.policy == "dedicated":
                self.ops.repin_shared()
            log.info("%s: runs here now; owned by this ledger", name)
            return {"name": name, "host": ctx.host, "state": "present"}
        if not abandon and time.time() < float(rec.move.get("deadline", 0)):
            return {"name": name, "host": ctx.host, "state": "waiting"}
        self.ops.finish_delete(rec, dom if ctx.ours(dom) else None)
        log.info("%s: the migration's claim given up (no guest came)", name)
        return {"name": name, "host": ctx.host, "state": "gone"}
