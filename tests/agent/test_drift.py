"""Drift injected with virsh behind ppec's back on a real QEMU agent, found by `ppec alerts`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.realparts import Agent, Cli, unique, virsh

TINY = ("--memory", "64M", "--disk", "16M")


def alerts(cli: Cli, domains: set[str]) -> tuple[int, list[dict[str, str]]]:
    """The exit code and the alerts about ``domains``, this test's (another test run on
    this libvirtd, at the same time, makes FOREIGN_DOMAIN alerts that are right but not
    ours; with only those, the code is taken as 0)."""
    done = cli.run("alerts", "-o", "json")
    found = json.loads(done.stdout)["alerts"]
    mine = [a for a in found if a["object"] in domains]
    return (done.returncode if mine or not found else 0), mine


def test_each_kind_of_drift_is_reported_with_its_code(cli: Cli, qemu_dir: Path) -> None:
    agent = Agent(qemu_dir / "drift", host=unique("q"), libvirt_uri="qemu:///system",
                  extra={"drift_interval": 0}).start()
    foreign = unique("foreign")
    try:
        cli.ok("host", "add", "q", "--address", "local", "--socket", str(agent.socket))
        pinned, shared, gone, fat = (unique(p) for p in ("pin", "sh", "gone", "fat"))
        mine = {pinned, shared, gone, fat, foreign}
        cli.ok("vm", "create", pinned, "--cpus", "1", *TINY, "--numa", "dedicated")
        for name in (shared, gone, fat):
            cli.ok("vm", "create", name, "--cpus", "1", *TINY)
        for _ in range(3):   # a clean host: nothing, however often it is asked
            assert alerts(cli, mine) == (0, [])

        (qemu_dir / "foreign.xml").write_text(
            f"<domain type='qemu'><name>{foreign}</name><memory unit='MiB'>32</memory>"
            f"<os><type arch='x86_64'>hvm</type></os></domain>")
        virsh("define", str(qemu_dir / "foreign.xml"))
        virsh("destroy", shared)
        virsh("destroy", gone)
        virsh("undefine", gone)
        planned = virsh("vcpupin", pinned).split()[-1]
        virsh("vcpupin", pinned, "0", {"0": "1", "1": "0"}[planned], "--live", "--config")
        extra = qemu_dir / "extra.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(extra), "16M"],
                       check=True)
        virsh("attach-disk", fat, str(extra), "vdb", "--subdriver", "qcow2", "--config")
        virsh("setmem", pinned, "32M", "--config")

        code, found = alerts(cli, mine)
        assert code == 10
        got = {(a["code"], a["object"]) for a in found}
        assert got == {("FOREIGN_DOMAIN", foreign), ("POWER_MISMATCH", shared),
                       ("DOMAIN_MISSING", gone), ("PINNING_CHANGED", pinned),
                       ("DISK_ADDED", fat), ("MEMORY_CHANGED", pinned)}, found
        assert all(a["host"] == "q" and a["first_seen"] for a in found)
        detail = {a["code"]: a["detail"] for a in found}
        assert str(extra) in detail["DISK_ADDED"]
        assert detail["POWER_MISMATCH"] == "ppec last set running, libvirt has shut-off"
        # First seen stays put while the alert stays open.
        _, again = alerts(cli, mine)
        assert {(a["code"], a["first_seen"]) for a in again} == \
            {(a["code"], a["first_seen"]) for a in found}
        # Unknown domains are reported, never touched.
        assert virsh("domstate", foreign).strip() == "shut off"
        table = cli.run("alerts")
        assert table.returncode == 10
        assert table.stdout.splitlines()[0].split() == ["HOST", "CODE", "OBJECT", "DETAIL",
                                                        "FIRST", "SEEN"]
        # Put things back: the alerts resolve.
        virsh("undefine", foreign)
        cli.ok("vm", "start", shared)
        assert {a["code"] for a in alerts(cli, mine)[1]} == {"DOMAIN_MISSING", "PINNING_CHANGED",
                                                      "DISK_ADDED", "MEMORY_CHANGED"}
    finally:
        virsh("undefine", foreign, check=False)
        agent.kill()
