"""The guest CPU model on real QEMU (issue 24): never left out, checked in libvirt's XML
and in the QEMU process's own command line (/proc)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.realparts import Agent, Cli, qemu_pid, unique, virsh

TINY = ("--cpus", "1", "--memory", "64M", "--disk", "16M")


def _cpu_arg(name: str) -> str:
    pid = qemu_pid(name)
    assert pid is not None, f"no QEMU process for {name}"
    words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return words[words.index(b"-cpu") + 1].decode().split(",")[0]


def _agent(qemu_dir: Path, cli: Cli, **extra: object) -> Agent:
    agent = Agent(qemu_dir / unique("a"), host=unique("c"), libvirt_uri="qemu:///system",
                  extra={"cpu_overcommit": 12.0, **extra}).start()
    cli.ok("host", "add", agent.host, "--address", "local", "--socket", str(agent.socket))
    return agent


@pytest.mark.parametrize("numa", ["shared", "dedicated"])
def test_auto_gives_host_model_on_kvm_or_maximum_on_tcg(cli: Cli, qemu_dir: Path,
                                                        numa: str) -> None:
    """``domain_type = "auto"`` takes KVM only if a guest with host-model starts there (this
    machine's nested KVM aborts QEMU on that CPU's MSRs, so it falls back to TCG and says
    why); either way the VM has a CPU model and QEMU runs it."""
    agent = _agent(qemu_dir, cli)
    try:
        name = unique("cpu")
        cli.ok("vm", "create", name, *TINY, "--numa", numa)
        info = json.loads(cli.ok("host", "show", agent.host, "-o", "json").stdout)["live"]
        live = ET.fromstring(virsh("dumpxml", name)).find("cpu")
        saved = ET.fromstring(virsh("dumpxml", "--inactive", name)).find("cpu")
        assert live is not None and saved is not None
        if info["domain_type"] == "kvm":
            assert (info["cpu_mode"], info["kvm_unusable"]) == ("host-model", "")
            assert saved.get("mode") == "host-model"
            # libvirt expands host-model into the model it resolved for this host.
            assert live.findtext("model") == info["cpu_model"] != ""
            assert _cpu_arg(name) == info["cpu_model"]
        else:
            assert info["domain_type"] == "qemu" and info["cpu_mode"] == "maximum"
            if Path("/dev/kvm").exists():   # offered, and the probe said why not
                assert info["kvm_unusable"].startswith("cpu_mode host-model under KVM: ")
            else:
                assert info["kvm_unusable"] == ""
            assert saved.get("mode") == live.get("mode") == "maximum"
            assert _cpu_arg(name) == "max"
        # A dedicated VM keeps its guest topology and NUMA cell beside the model.
        assert (live.find("numa/cell") is not None) == (numa == "dedicated")
        cli.ok("vm", "delete", name)
    finally:
        agent.kill()


def test_a_named_model_on_kvm(cli: Cli, qemu_dir: Path) -> None:
    """cpu_mode names a model: QEMU runs exactly it (Nehalem: x86-64-v2, what EL9-class
    guests need at least, and one this machine's nested KVM can run)."""
    if not Path("/dev/kvm").exists():
        pytest.skip("no /dev/kvm on this machine: KVM's named models cannot be run")
    agent = _agent(qemu_dir, cli, domain_type="kvm", cpu_mode="Nehalem")
    try:
        name = unique("cpu")
        cli.ok("vm", "create", name, *TINY, "--numa", "dedicated")
        saved = ET.fromstring(virsh("dumpxml", "--inactive", name)).find("cpu")
        assert saved is not None
        assert (saved.get("mode"), saved.findtext("model")) == ("custom", "Nehalem")
        assert _cpu_arg(name) == "Nehalem"
        info = json.loads(cli.ok("host", "show", agent.host, "-o", "json").stdout)["live"]
        assert (info["domain_type"], info["cpu_mode"]) == ("kvm", "Nehalem")
        cli.ok("vm", "delete", name)
    finally:
        agent.kill()
