"""The one boundary between ppec and libvirt.

Everything that touches the libvirt API lives here: libvirt's default error printer is
silenced and every ``libvirtError`` becomes a ``HypervisorError`` with libvirt's own message
and code in ``details``, so the rest of the agent never sees a libvirt type.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import libvirt

from ppec.agent import domxml
from ppec.agent.hvevents import RemovalEvents, live_alias
from ppec.core.errors import HypervisorError, NotFound

log = logging.getLogger(__name__)
T = TypeVar("T")

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",   # running, waiting on I/O: same to an operator
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting-down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut-off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}


def _quiet(_ctx: Any, _err: Any) -> None:
    """libvirt prints every error to stderr by default; we report them ourselves."""


libvirt.registerErrorHandler(_quiet, None)

_events_lock = threading.Lock()
_events_running = False


def _start_event_loop() -> None:
    """libvirt delivers domain events (device-removed) only to a process that runs its
    event loop, registered before the first connection is opened."""
    global _events_running
    with _events_lock:
        if _events_running:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _events_running = True


@dataclass(frozen=True)
class Domain:
    name: str
    uuid: str
    state: str
    vcpus: int
    memory_mib: int
    disks: tuple[str, ...]
    owner: domxml.Ownership | None
    interfaces: tuple[domxml.InterfaceInfo, ...] = ()

    @property
    def active(self) -> bool:
        return self.state not in ("shut-off", "crashed", "nostate")


@dataclass(frozen=True)
class Node:
    cpus: int
    memory_mib: int
    model: str
    arch: str
    hypervisor: str
    libvirt_version: str
    domain_types: tuple[str, ...]


def _version(n: int) -> str:
    return f"{n // 1_000_000}.{n // 1000 % 1000}.{n % 1000}"


class Hypervisor:
    """A libvirt connection that reconnects when libvirtd restarts."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()
        _start_event_loop()

    def _connection(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                log.warning("libvirt connection to %s lost; reconnecting", self.uri)
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as e:
                raise HypervisorError(f"cannot connect to libvirt at {self.uri}: "
                                      f"{e.get_error_message()}", code="LIBVIRT_UNAVAILABLE",
                                      details={"libvirt_code": e.get_error_code()}) from None
            return self._conn

    def call(self, what: str, fn: Callable[[libvirt.virConnect], T]) -> T:
        """``fn`` on the connection; libvirt's errors as NOT_FOUND or LIBVIRT errors
        naming ``what`` (also for the console and stats modules' own libvirt calls)."""
        conn = self._connection()
        try:
            return fn(conn)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise NotFound(f"{what}: no such domain", code="NOT_FOUND") from None
            raise HypervisorError(f"{what}: {e.get_error_message()}",
                                  details={"libvirt_code": e.get_error_code(),
                                           "libvirt_message": e.get_error_message()}) from None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None

    # -- host -----------------------------------------------------------------------------

    def node(self) -> Node:
        def get(conn: libvirt.virConnect) -> Node:
            model, memory_mib, cpus, *_ = conn.getInfo()
            caps = ET.fromstring(conn.getCapabilities())
            arch = caps.findtext("host/cpu/arch", "x86_64")
            types = tuple(dict.fromkeys(
                d.get("type", "") for a in caps.findall("guest/arch")
                if a.get("name") == arch for d in a.findall("domain")))
            return Node(cpus=cpus, memory_mib=memory_mib, model=model, arch=arch,
                        hypervisor=conn.getType(),
                        libvirt_version=_version(conn.getLibVersion()), domain_types=types)
        return self.call("node info", get)

    def domain_capabilities(self, domain_type: str, arch: str) -> str:
        return str(self.call("domain capabilities", lambda c: c.getDomainCapabilities(
            None, arch, None, domain_type, 0)))

    def try_start(self, xml: str) -> None:
        """Start the transient domain ``xml`` paused and destroy it at once (a probe)."""
        def run(conn: libvirt.virConnect) -> None:
            dom = conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED)
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
        self.call("probe a guest", run)

    def capabilities(self) -> str:
        return str(self.call("capabilities", lambda c: c.getCapabilities()))

    def xml(self, name: str, inactive: bool = False) -> str:
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        return str(self.call(f"dump XML of {name}",
                             lambda c: c.lookupByName(name).XMLDesc(flags)))

    def pin_float(self, name: str, cpus: frozenset[int], host_cpus: int) -> None:
        """Let every vCPU and the emulator of ``name`` run on ``cpus`` (live and config)."""
        cpumap = tuple(i in cpus for i in range(host_cpus))

        def pin(conn: libvirt.virConnect) -> None:
            dom = conn.lookupByName(name)
            scopes = [libvirt.VIR_DOMAIN_AFFECT_CONFIG]
            if dom.isActive():
                scopes.append(libvirt.VIR_DOMAIN_AFFECT_LIVE)
            vcpus = domxml.vcpu_count(ET.fromstring(dom.XMLDesc(0)))
            for scope in scopes:
                try:
                    for vcpu in range(vcpus):
                        dom.pinVcpuFlags(vcpu, cpumap, scope)
                    dom.pinEmulator(cpumap, scope)
                except libvirt.libvirtError as e:
                    # libvirt's test driver pins live only; QEMU does both.
                    if e.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG,
                                                  libvirt.VIR_ERR_NO_SUPPORT):
                        raise
        self.call(f"re-pin {name}", pin)

    # -- domains --------------------------------------------------------------------------

    @staticmethod
    def _describe(dom: libvirt.virDomain) -> Domain:
        state, _max_kib, _mem_kib, _ncpu, _cpu_time = dom.info()
        root = ET.fromstring(dom.XMLDesc(0))
        return Domain(name=dom.name(), uuid=dom.UUIDString(), state=_STATES.get(state, "unknown"),
                      vcpus=domxml.vcpu_count(root),
                      memory_mib=int(root.findtext("memory", "0")) // 1024,
                      disks=tuple(domxml.disk_paths(root)), owner=domxml.ownership(root),
                      interfaces=tuple(domxml.interfaces(root)))

    def domains(self) -> list[Domain]:
        def get(conn: libvirt.virConnect) -> list[Domain]:
            found = []
            for dom in conn.listAllDomains(0):
                try:
                    found.append(self._describe(dom))
                except libvirt.libvirtError as e:
                    # Undefined between listing and describing: it no longer exists.
                    if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        raise
            return found
        return self.call("list domains", get)

    def find(self, name: str) -> Domain | None:
        try:
            return self.call(f"look up {name}",
                             lambda c: self._describe(c.lookupByName(name)))
        except NotFound:
            return None

    def disk_users(self, path: str) -> list[tuple[str, str]]:
        """(domain, target) of every disk backed by ``path`` (as its image or anywhere in
        its backing chain) in any domain's live or saved XML, whoever made the domain."""
        def scan(conn: libvirt.virConnect) -> list[tuple[str, str]]:
            users = []
            for dom in conn.listAllDomains(0):
                try:
                    xmls = [dom.XMLDesc(0)]
                    if dom.isActive() and dom.isPersistent():
                        xmls.append(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
                except libvirt.libvirtError as e:
                    if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        raise
                    continue
                found = {target for x in xmls
                         for target, source in domxml.disk_sources(ET.fromstring(x))
                         if os.path.realpath(source) == path}
                users += [(dom.name(), t) for t in sorted(found)]
            return users
        return self.call("list disk users", scan)

    def define(self, xml: str) -> None:
        self.call("define domain", lambda c: c.defineXML(xml))

    def start(self, name: str) -> None:
        self.call(f"start {name}", lambda c: c.lookupByName(name).create())

    def shutdown(self, name: str) -> None:
        self.call(f"shut down {name}", lambda c: c.lookupByName(name).shutdown())

    def destroy(self, name: str) -> None:
        def stop(conn: libvirt.virConnect) -> None:
            dom = conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
        self.call(f"destroy {name}", stop)

    def undefine(self, name: str) -> None:
        flags = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                 | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                 | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)

        def undefine(conn: libvirt.virConnect) -> None:
            dom = conn.lookupByName(name)
            try:
                dom.undefineFlags(flags)
            except libvirt.libvirtError as e:
                # The test driver and old libvirt lack some flags; plain undefine then.
                if e.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT,
                                              libvirt.VIR_ERR_INVALID_ARG):
                    raise
                dom.undefine()
        self.call(f"undefine {name}", undefine)

    def wait_inactive(self, name: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dom = self.find(name)
            if dom is None or not dom.active:
                return True
            time.sleep(0.2)
        return False

    # -- devices --------------------------------------------------------------------------

    def attach_device(self, name: str, xml: str) -> None:
        """Add a device to the persistent config and, if the domain runs, live; libvirt
        changes the config only when the live attach worked."""
        def attach(conn: libvirt.virConnect) -> None:
            dom = conn.lookupByName(name)
            flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
            if dom.isActive():
                flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
            dom.attachDeviceFlags(xml, flags)
        self.call(f"attach device to {name}", attach)

    def detach_config(self, name: str, xml: str) -> None:
        """Remove a device from the persistent config only (takes effect at next start)."""
        self.call(f"remove device from {name}'s config",
                  lambda c: c.lookupByName(name).detachDeviceFlags(
                      xml, libvirt.VIR_DOMAIN_AFFECT_CONFIG))

    def detach_live(self, name: str, target: str, path: str, timeout: float,
                    waiting: Callable[[], AbstractContextManager[Any]] = nullcontext
                    ) -> bool:
        """Ask the guest to release disk ``target`` (backed by ``path``) and wait, inside
        ``waiting()`` (the agent lets go of its host lock there). True once removal is
        confirmed (or the disk is not live, or the domain is gone), False when it cannot be
        within ``timeout``. detachDeviceAlias returns at once; only libvirt's event, or the
        disk gone from the live XML (polled), proves the guest let go. (virsh detach-device
        reports success after 5 s whether or not the guest let go.)"""
        def detach(conn: libvirt.virConnect) -> bool:
            dom = conn.lookupByName(name)
            alias = live_alias(dom, target, path)
            if alias is None:
                return True
            if not alias:
                log.warning("%s: live disk %s has no alias; cannot ask for its removal",
                            name, target)
                return False
            with RemovalEvents(conn, dom, alias) as events:
                dom.detachDeviceAlias(alias, libvirt.VIR_DOMAIN_AFFECT_LIVE)
                log.info("%s: asked the guest to release %s (%s); waiting up to %.0f s",
                         name, target, alias, timeout)
                deadline = time.monotonic() + timeout
                with waiting():
                    return events.wait(dom, target, path, deadline)
        return self.call(f"detach {target} from {name}", detach)

    def saved_state_xml(self, name: str) -> str | None:
        """The domain XML inside a managed-save image (a suspended-to-disk guest that will
        resume with exactly these devices), or None when there is none."""
        def get(conn: libvirt.virConnect) -> str | None:
            dom = conn.lookupByName(name)
            if not dom.hasManagedSaveImage(0):
                return None
            return str(dom.managedSaveGetXMLDesc(0))
        return self.call(f"read {name}'s managed-save image", get)
