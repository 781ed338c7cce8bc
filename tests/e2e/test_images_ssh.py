"""Images pushed to real sshd hosts over the agent's channel (issue 25): a 1 GiB image at
the same read-only path on three hosts, VMs booted on each from catalogue kernel and initrd
images; placement prefers the host that holds an image, and pushes it to another first."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

from tests.e2e.fleet import make_fleet
from tests.realparts import QEMU_URI, Cli, make_key, unique, virsh


def _image(path: Path, gib: int = 1) -> str:
    """A raw image of ``gib`` GiB with random data throughout (nothing to compress or skip),
    and its SHA-256."""
    h = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(gib * 64):
            block = os.urandom(16 << 20)
            h.update(block)
            f.write(block)
    return h.hexdigest()


def test_a_gib_pushed_to_three_hosts_and_a_vm_booted_on_each(
        cli: Cli, qemu_dir: Path, guest: Path, sshd_ready: None) -> None:
    transport = qemu_dir / "transport_ed25519"
    hosts = make_fleet(qemu_dir / "fleet", 3, QEMU_URI, make_key(transport),
                       extra={"domain_type": "qemu", "cpu_overcommit": 12.0},
                       own_image_dir=True)
    try:
        for h in hosts:
            cli.ok(*h.add_args(transport), "--accept-new-host-key")
        big = qemu_dir / "big.raw"
        digest = _image(big)
        cli.ok("image", "add", "big", str(big))
        cli.ok("image", "add", "tiny-kernel", str(guest / "vmlinuz"), "--kind", "kernel")
        cli.ok("image", "add", "tiny-initrd", str(guest / "initrd.img"), "--kind", "initrd")
        done = cli.run("image", "push", "big", "--all", "--max-parallel", "3", "-o", "json")
        assert done.returncode == 0, done.stderr
        lines = [json.loads(x) for x in done.stdout.splitlines()]
        assert sorted((x["host"], x["state"], x["sent"]) for x in lines) == [
            (h.name, "pushed", 1 << 30) for h in hosts]
        # The same path under every host's image dir, read-only, the right bytes.
        for x in lines:
            host = next(h for h in hosts if h.name == x["host"])
            path = Path(x["path"])
            assert path == host.agent.root.parent / "images" / "by-digest" / digest
            assert stat.S_IMODE(path.stat().st_mode) == 0o444
            assert subprocess.run(["sha256sum", str(path)], capture_output=True, text=True,
                                  check=True).stdout.split()[0] == digest
        listed = json.loads(cli.ok("image", "list", "-o", "json").stdout)["images"]
        [row] = [i for i in listed if i["name"] == "big"]
        assert row["hosts"] == sorted(h.name for h in hosts) and row["digest"] == digest
        again = cli.run("image", "push", "big", "--all", "-o", "json")
        assert {json.loads(x)["state"] for x in again.stdout.splitlines()} == {"present"}
        # A VM on each host from catalogue kernel and initrd (pushed on create).
        for h in hosts:
            name = unique("boot")
            cli.ok("vm", "create", name, "--host", h.name, "--cpus", "1", "--memory", "128M",
                   "--disk", "16M", "--kernel", "tiny-kernel", "--initrd", "tiny-initrd",
                   "--cmdline", "console=ttyS0")
            log = h.agent.root / "state" / "console" / f"{name}.log"
            subprocess.run(["timeout", "120", "sh", "-c",
                            f"until grep -q PPEC-GUEST-UP {log} 2>/dev/null; do sleep 0.5; "
                            f"done"], check=True)
            assert "by-digest" in virsh("dumpxml", name)
            cli.ok("vm", "delete", name)
    finally:
        for h in hosts:
            h.sshd.stop()
            h.agent.kill()
