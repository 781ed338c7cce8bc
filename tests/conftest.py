from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realparts import QEMU_SCRATCH, Agent, Cli, qemu_reason, sshd_reason, unique


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "operator")


@pytest.fixture
def test_agent(tmp_path: Path) -> Iterator[Agent]:
    """An agent on libvirt's test driver (a clean 16-CPU, 64 GiB host)."""
    agent = Agent(tmp_path / "agent", host="t1").start()
    yield agent
    agent.kill()


@pytest.fixture(scope="session")
def qemu_ready() -> None:
    reason = qemu_reason()
    if reason:
        pytest.skip(f"real libvirtd + QEMU unavailable: {reason}")


@pytest.fixture(scope="session")
def sshd_ready() -> None:
    reason = sshd_reason()
    if reason:
        pytest.skip(f"real sshd unavailable: {reason}")


@pytest.fixture
def qemu_dir(qemu_ready: None) -> Iterator[Path]:
    """A scratch dir QEMU (as libvirt-qemu) can reach; domains built there die with it."""
    QEMU_SCRATCH.mkdir(mode=0o711, exist_ok=True)
    QEMU_SCRATCH.chmod(0o711)
    root = QEMU_SCRATCH / unique("t")
    root.mkdir(mode=0o711)
    yield root
    # Anything a failed test left in libvirt that lives in this dir goes too.
    names = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                           capture_output=True, text=True, check=False).stdout.split()
    for name in names:
        xml = subprocess.run(["virsh", "-c", "qemu:///system", "dumpxml", name],
                             capture_output=True, text=True, check=False).stdout
        if str(root) in xml:
            subprocess.run(["virsh", "-c", "qemu:///system", "destroy", name],
                           capture_output=True, check=False)
            subprocess.run(["virsh", "-c", "qemu:///system", "undefine", name],
                           capture_output=True, check=False)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def qemu_agent(qemu_dir: Path) -> Iterator[Agent]:
    """An agent on the real libvirtd + QEMU of this machine."""
    # 20 tiny shared VMs on a 2-CPU machine is 10 vCPUs per CPU: allow it here.
    agent = Agent(qemu_dir / "agent", host=unique("q"), libvirt_uri="qemu:///system",
                  extra={"cpu_overcommit": 12.0}).start()
    yield agent
    agent.kill()
