"""What every handler of the agent shares: config, libvirt, the ledger, paths, topology.

One object per agent process, built by the daemon and handed to each handler object
(``ppec.agent.handlers``). It holds no behaviour of its own beyond the facts every handler
reads the same way: which domains are ours, where a VM's derived files live, the host's
NUMA cells less the host's reservation.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import ppec
from ppec import numa
from ppec.agent import cpuprobe, domxml, tuning
from ppec.agent.config import AgentConfig, parse_cpu_list
from ppec.agent.hypervisor import Domain, Hypervisor
from ppec.agent.ledger import Ledger, VmRecord
from ppec.core.errors import BadInput, Conflict, HypervisorError, NotFound
from ppec.wire import bundle as pkgfiles

log = logging.getLogger(__name__)
Holdings = tuple[frozenset[int], tuple[tuple[int, int], ...]]


class AgentContext:
    def __init__(self, config: AgentConfig, hypervisor: Hypervisor, ledger: Ledger) -> None:
        self.config = config
        self.hv = hypervisor
        self.ledger = ledger
        self.storage_dir = Path(config.storage_dir)
        self.started = time.time()
        self._domain_type: str | None = None
        self.kvm_unusable = ""   # why ``auto`` chose TCG although KVM is offered
        self._host_model: str | None = None
        self._topology: numa.Topology | None = None
        # Detaches waiting for their guest right now (with the host lock let go); a
        # 'detaching' row not in here was left by a request that failed or a crash.
        self.in_flight: set[tuple[str, str]] = set()
        # VMs this process is migrating away right now (agent/outgoing.py): their libvirt
        # job may have ended a moment before the call returns.
        self.migrating: set[str] = set()
        # Set by the server: releases the host lock for the duration (see AgentServer).
        self.unlocked: Callable[[], AbstractContextManager[Any]] = nullcontext
        # Set by agent.update once the new files are in place: the server stops after
        # replying and the daemon re-executes itself on them.
        self.restart_requested = False
        # What this process runs (read at start: the files on disk may be newer), and a
        # new id per start, so a client can tell the restarted agent from the old one.
        self.boot_id = str(uuid.uuid4())
        self.running = pkgfiles.manifest(pkgfiles.package_root())
        self.digest = pkgfiles.digest(ppec.__version__, self.running)
        # The agent's own files against its accepted release (ppec.agent.verify): open
        # AGENT_FILES_CHANGED alerts as (code, object, detail); drift.check reports them.
        self.file_alerts: list[tuple[str, str, str]] = []
        # Set with restart_requested: what the watchdog must see answer after the exec.
        self.after_restart: dict[str, str] = {}
        # Releases that failed their health check here (read at start, for ping).
        self.failed_releases: list[str] = []

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def domain_type(self) -> str:
        if self._domain_type is None:
            chosen = choose_domain_type(self.hv.node().domain_types, self.config.domain_type,
                                        self.hv.uri)
            if chosen == "kvm" and self.config.domain_type == "auto":
                chosen = self._kvm_or_tcg()
            self._domain_type = chosen
        return self._domain_type

    def _kvm_or_tcg(self) -> str:
        """``auto`` takes KVM only when a guest with the configured CPU starts under it;
        else TCG, with the reason kept for host.info."""
        why = cpuprobe.kvm_refuses(self.hv, self.config.cpu_mode, self.hv.node().arch)
        if why:
            self.kvm_unusable = f"cpu_mode {self.config.cpu_mode} under KVM: {why}"
            log.warning("KVM is offered but unusable (%s); using TCG", self.kvm_unusable)
            return "qemu"
        return "kvm"

    @property
    def host_model(self) -> str:
        if self._host_model is None:
            self._host_model = cpuprobe.host_model(self.hv, self.domain_type,
                                                   self.hv.node().arch) \
                if self.domain_type == "kvm" else ""
        return self._host_model

    @property
    def cpu_mode(self) -> str:
        """The guest CPU: TCG emulates ``maximum`` (host-model and host-passthrough need
        KVM); KVM takes the configured mode; libvirt's test driver models no CPU."""
        if self.domain_type == "qemu":
            return "maximum"
        return self.config.cpu_mode if self.domain_type == "kvm" else ""

    @functools.cached_property
    def disk_tuning(self) -> tuning.DiskTuning:
        """The disks' cache and I/O mode here, probed once (O_DIRECT on the storage dir)."""
        try:
            chosen = tuning.choose(self.config.disk_cache, self.storage_dir)
        except OSError as e:
            raise BadInput(str(e)) from None
        log.info("disks: cache=%s io=%s discard=%s (%s)", chosen.cache, chosen.io,
                 chosen.discard, chosen.why)
        return chosen

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

    def ours(self, dom: Domain | None) -> bool:
        """Built by this host's agent: ppec metadata naming this host."""
        return dom is not None and dom.owner is not None and dom.owner.host == self.host

    def owned(self, name: str) -> tuple[Domain | None, VmRecord]:
        """The VM to change: in the ledger, and libvirt's domain (if any) is ours."""
        dom, rec = self.hv.find(name), self.ledger.get(name)
        if rec is None and dom is None:
            raise NotFound(f"no VM named {name} on {self.host}")
        if rec is None or (dom is not None and not self.ours(dom)):
            # A stale ledger row must not make another domain of that name ours.
            raise Conflict(f"domain {name} on {self.host} was not created by this "
                           f"host's ppec agent; refusing to touch it", code="NOT_OWNED")
        return dom, rec

    def seed_path(self, name: str) -> Path:
        # Derived from the name, so every undo and recovery path can find it.
        return self.storage_dir / f"{name}-seed.iso"

    def console_log(self, name: str) -> Path:
        # Written by virtlogd (root), kept out of the storage dir, which holds volumes only.
        return Path(self.config.state_dir) / "console" / f"{name}.log"

    def live_holdings(self, rec: VmRecord, xml: str) -> Holdings:
        """The CPUs and per-cell memory a VM holds, read from its live XML."""
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


def choose_domain_type(offered: tuple[str, ...], wanted: str, uri: str) -> str:
    """``auto``: kvm when the host offers it and /dev/kvm is usable, else qemu (TCG)."""
    if wanted != "auto":
        if wanted not in offered:
            raise HypervisorError(f"domain type {wanted!r} is not offered by {uri} "
                                  f"(offered: {', '.join(offered) or 'none'})")
        return wanted
    if "kvm" in offered and os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "kvm"
    for candidate in ("qemu", *offered):
        if candidate in offered:
            return candidate
    raise HypervisorError(f"{uri} offers no domain type for this architecture")


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
