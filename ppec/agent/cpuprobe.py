"""The guest CPU a host can run: libvirt's host-model name, and whether KVM starts a guest
with the configured CPU at all (``domain_type = "auto"`` asks before choosing KVM)."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

from ppec.agent import domxml
from ppec.agent.hypervisor import Hypervisor
from ppec.core.errors import HypervisorError


def host_model(hv: Hypervisor, domain_type: str, arch: str) -> str:
    """The CPU model libvirt resolves ``host-model`` to here ("" where it has none, e.g.
    the test driver or TCG): what migration compares between hosts."""
    try:
        caps = ET.fromstring(hv.domain_capabilities(domain_type, arch))
    except HypervisorError:
        return ""
    for mode in caps.findall("cpu/mode"):
        if mode.get("name") == "host-model" and mode.get("supported") == "yes":
            return mode.findtext("model", "")
    return ""


def kvm_refuses(hv: Hypervisor, cpu_mode: str, arch: str) -> str:
    """Start a paused, diskless KVM guest with ``cpu_mode`` and destroy it at once: "" when
    QEMU came up, else libvirt's reason. Some nested KVMs offer /dev/kvm but abort QEMU on
    the host-model CPU's MSRs (this project's own CI machine does)."""
    xml = domxml.probe_domain(f"ppec-probe-{uuid.uuid4().hex[:8]}", "kvm", arch, cpu_mode)
    try:
        hv.try_start(xml)
    except HypervisorError as e:
        return str(e.details.get("libvirt_message") or e.message)
    return ""
