#!/usr/bin/env python3
"""`ppec vm migrate` against `virsh migrate --live --copy-storage-inc`, same guest size,
same two libvirtds.

Two extra libvirtds run on this machine (tests/libvirt-peer.sh: distinct host UUIDs), each
behind a real agent and sshd. A 256 MiB tiny guest (kernel boot, TCG, a 64 MiB overlay)
built by ppec moves back and forth with `ppec vm migrate --to`; its twin (the same XML
renamed, its own overlay and seed, defined with virsh, no ppec) moves back and forth with
`virsh migrate --live --p2p --persistent --copy-storage-inc --xml DEST` after a
`qemu-img create` of its overlay on the target (ppec's claim makes the same file). Per
round: wall time, and libvirt's own figure of the guest's downtime (the finished job's,
`domjobinfo --completed` for virsh, the agent's answer for ppec). Prints medians and the
ratio (target <= 1.2x). Then `ppec host evacuate` of 6 more guests with --max-parallel 1
and 2. As root.

    .venv/bin/python bench/migrate.py [--rounds 6] [--no-evacuate]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.migparts import MigHost, make_hosts, start_peer, stop_peer
from tests.realparts import Cli, make_key

GUEST = Path("/var/cache/ppec-tests/guest")


def sh(*cmd: str) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)}: {done.stderr.strip()}")
    return done.stdout


def twin_xml(xml: str, root: Path) -> str:
    """The ppec guest's XML as a plain libvirt guest under ``root``: renamed, no UUID, no
    ppec metadata, its own overlay, seed and console log."""
    xml = xml.replace("<name>bench</name>", "<name>twin</name>")
    xml = re.sub(r"<uuid>.*?</uuid>", "", xml)
    xml = re.sub(r"<metadata>.*?</metadata>", "", xml, flags=re.S)
    xml = re.sub(r"<source file='[^']*bench\.qcow2'[^>]*>",
                 f"<source file='{root}/twin.qcow2'/>", xml)
    xml = re.sub(r"<source file='[^']*bench-seed\.iso'[^>]*>",
                 f"<source file='{root}/twin-seed.iso'/>", xml)
    return re.sub(r"<log file='[^']*'", f"<log file='{root}/twin.log'", xml)


def virsh_round(src: MigHost, dst: MigHost, dirs: dict[str, Path]) -> tuple[float, float, int]:
    """Move the twin src -> dst: (wall with its target file made, wall of virsh migrate
    alone, libvirt's downtime in ms)."""
    xml = src.peer.virsh("dumpxml", "--migratable", "twin")
    dest = xml.replace(str(dirs[src.name]), str(dirs[dst.name]))
    (dirs[dst.name] / "dest.xml").write_text(dest)
    start = time.perf_counter()
    sh("qemu-img", "create", "-q", "-f", "qcow2", str(dirs[dst.name] / "twin.qcow2"), "64M")
    sh("cp", str(dirs[src.name] / "twin-seed.iso"), str(dirs[dst.name] / "twin-seed.iso"))
    mig = time.perf_counter()
    src.peer.virsh("migrate", "--live", "--p2p", "--persistent", "--copy-storage-inc",
                   "--xml", str(dirs[dst.name] / "dest.xml"), "twin",
                   f"qemu+unix:///system?socket={dst.peer.socket}", "tcp://127.0.0.1")
    end = time.perf_counter()
    info = src.peer.virsh("domjobinfo", "--completed", "twin")
    downtime = int(re.search(r"Total downtime:\s+(\d+)", info).group(1))  # type: ignore[union-attr]
    src.peer.virsh("undefine", "twin")
    for f in ("twin.qcow2", "twin-seed.iso"):
        (dirs[src.name] / f).unlink()
    return end - start, end - mig, downtime


def evacuation(cli: Cli, hosts: list[MigHost]) -> None:
    """6 more guests (128 MiB) on one host, evacuated with --max-parallel 1, brought
    back (`host restore --move-back`), evacuated again with --max-parallel 2."""
    h1 = hosts[0].name
    where = json.loads(cli.ok("vm", "list", "-o", "json").stdout)["vms"]
    for vm in where:   # the bench guest out of the way: only the six move
        if vm["name"] == "bench" and vm["host"] == h1:
            cli.ok("vm", "migrate", "bench", "--to", hosts[1].name)
    for i in range(6):
        cli.ok("vm", "create", f"ev{i}", "--host", h1, "--cpus", "1", "--memory", "128M",
               "--disk", "16M", "--kernel", str(GUEST / "vmlinuz"), "--initrd",
               str(GUEST / "initrd.img"), "--cmdline", "console=ttyS0")
    time.sleep(5)
    took = {}
    for parallel in (1, 2):
        start = time.perf_counter()
        done = cli.run("host", "evacuate", h1, "--max-parallel", str(parallel), "-o", "json")
        took[parallel] = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"evacuate: {done.stderr.strip()}")
        if parallel == 1:
            cli.ok("host", "restore", h1, "--move-back", "--max-parallel", "2")
    print("evacuating 6 VMs (128 MiB each) from one host to the other:")
    print(f"  --max-parallel 1  {took[1]:6.2f} s")
    print(f"  --max-parallel 2  {took[2]:6.2f} s  ({took[1] / took[2]:.2f}x faster; this "
          f"machine has 2 CPUs for both libvirtds and every guest)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--no-evacuate", dest="evacuate", action="store_false",
                    help="skip timing `ppec host evacuate` of 6 VMs")
    args = ap.parse_args()
    sh(str(Path(__file__).resolve().parent.parent / "tests" / "guest" / "build.sh"))
    peers = [start_peer(f"ppec-bench{i}", 10 + i) for i in (1, 2)]
    root = Path(tempfile.mkdtemp(prefix="ppec-bench-mig-", dir="/var/tmp"))
    root.chmod(0o711)
    hosts: list[MigHost] = []
    try:
        key = root / "key"
        hosts = make_hosts(root / "fleet", peers, make_key(key),
                           lambda name: {"image_dir": str(GUEST)})
        cli = Cli(root / "operator")
        for h in hosts:
            cli.ok(*h.add_args(key), "--accept-new-host-key")
        cli.ok("vm", "create", "bench", "--host", "h1", "--cpus", "1", "--memory", "256M",
               "--disk", "64M", "--kernel", str(GUEST / "vmlinuz"), "--initrd",
               str(GUEST / "initrd.img"), "--cmdline", "console=ttyS0")
        dirs = {h.name: root / f"twin-{h.name}" for h in hosts}
        for d in dirs.values():
            d.mkdir(mode=0o711)
        h1, h2 = hosts
        inactive = h1.peer.virsh("dumpxml", "--inactive", "bench")
        (dirs["h1"] / "twin.xml").write_text(twin_xml(inactive, dirs["h1"]))
        sh("qemu-img", "create", "-q", "-f", "qcow2", str(dirs["h1"] / "twin.qcow2"), "64M")
        sh("cp", str(h1.agent.storage / "bench-seed.iso"), str(dirs["h1"] / "twin-seed.iso"))
        h1.peer.virsh("define", str(dirs["h1"] / "twin.xml"))
        h1.peer.virsh("start", "twin")
        time.sleep(5)   # both guests booted before the first round
        ppec_t, ppec_down, virsh_t, virsh_only, virsh_down = [], [], [], [], []
        where = {"bench": "h1", "twin": "h1"}
        for i in range(args.rounds):
            for which in (("ppec", "virsh") if i % 2 == 0 else ("virsh", "ppec")):
                if which == "ppec":
                    to = "h2" if where["bench"] == "h1" else "h1"
                    start = time.perf_counter()
                    done = cli.run("vm", "migrate", "bench", "--to", to, "-o", "json")
                    ppec_t.append(time.perf_counter() - start)
                    if done.returncode != 0:
                        sys.exit(f"ppec vm migrate: {done.stderr.strip()}")
                    ppec_down.append(int(json.loads(done.stdout).get("downtime_ms", -1)))
                    where["bench"] = to
                else:
                    src = h1 if where["twin"] == "h1" else h2
                    dst = h2 if src is h1 else h1
                    total, alone, down = virsh_round(src, dst, dirs)
                    virsh_t.append(total)
                    virsh_only.append(alone)
                    virsh_down.append(down)
                    where["twin"] = dst.name
        med = statistics.median
        print(f"{args.rounds} rounds each, alternating, 256 MiB guest, 64 MiB overlay, TCG:")
        print(f"  ppec vm migrate --to          median {med(ppec_t):6.2f} s   downtime "
              f"median {med(ppec_down)} ms  (runs: {', '.join(f'{t:.2f}' for t in ppec_t)})")
        print(f"  virsh migrate (+ target file) median {med(virsh_t):6.2f} s   downtime "
              f"median {med(virsh_down)} ms  (virsh migrate alone {med(virsh_only):.2f} s)")
        print(f"  ratio ppec / virsh: {med(ppec_t) / med(virsh_t):.2f}x (target <= 1.2x); "
              f"against virsh migrate alone {med(ppec_t) / med(virsh_only):.2f}x")
        if args.evacuate:
            evacuation(cli, hosts)
    finally:
        for h in hosts:
            h.agent.kill()
            h.sshd.stop()
        for p in peers:
            stop_peer(p.name)
        subprocess.run(["rm", "-rf", str(root)], check=False)


if __name__ == "__main__":
    main()
