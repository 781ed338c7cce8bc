"""libvirt's device-removal events for a live detach: part of the libvirt boundary
(``ppec.agent.hypervisor`` uses them; nothing else does)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import libvirt

from ppec.agent import domxml
from ppec.core.errors import HypervisorError

log = logging.getLogger("ppec.agent.hypervisor")


def live_alias(dom: libvirt.virDomain, target: str, path: str) -> str | None:
    """The disk's alias when it is live; "" when live without one; None if not."""
    if not dom.isActive():
        return None
    return next((d.alias for d in domxml.disks(ET.fromstring(dom.XMLDesc(0)))
                 if d.target == target and d.path == path), None)


class RemovalEvents:
    """libvirt's device-removed and removal-failed events for one device alias."""

    def __init__(self, conn: libvirt.virConnect, dom: libvirt.virDomain, alias: str) -> None:
        self.conn, self.dom, self.alias = conn, dom, alias
        self.removed, self.failed = threading.Event(), threading.Event()
        self._callbacks: list[int] = []

    def _on(self, event: threading.Event) -> Callable[[Any, Any, str, Any], None]:
        def handler(_c: Any, _d: Any, dev_alias: str, _o: Any) -> None:
            if dev_alias == self.alias:
                event.set()
        return handler

    def __enter__(self) -> RemovalEvents:
        try:
            for event_id, event in ((libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, self.removed),
                                    (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED,
                                     self.failed)):
                self._callbacks.append(self.conn.domainEventRegisterAny(
                    self.dom, event_id, self._on(event), None))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        for cb in self._callbacks:
            with contextlib.suppress(libvirt.libvirtError):
                self.conn.domainEventDeregisterAny(cb)

    def wait(self, dom: libvirt.virDomain, target: str, path: str, deadline: float) -> bool:
        """Until the event, the disk gone from the live XML, or the deadline (False)."""
        name = dom.name()
        while True:
            if self.removed.wait(min(0.5, max(deadline - time.monotonic(), 0))):
                return True
            if self.failed.is_set():
                raise HypervisorError(f"the guest of {name} refused to release {target}",
                                      code="DETACH_FAILED")
            try:
                if live_alias(dom, target, path) is None:
                    return True
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return True   # deleted meanwhile: no guest holds it
                # libvirtd restarted or the connection broke: unconfirmed.
                log.warning("%s: lost sight of %s while waiting: %s", name, target,
                            e.get_error_message())
                return False
            if time.monotonic() >= deadline:
                return False
