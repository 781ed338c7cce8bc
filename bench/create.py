#!/usr/bin/env python3
"""`ppec vm create` wall time against `virsh define` + `virsh start` of the same XML.

Runs on this machine's real libvirtd + QEMU through a local agent (as root). Each round
times one ppec create of a VM with a NIC (on a bridge the bench makes, without a host
address: no packet is sent) and a cloud-init seed carrying an SSH key, then takes that
domain's XML, renames it, points it at a fresh qcow2, lets libvirt pick its MAC and times
`virsh define` + `virsh start` of it (the same NIC and seed CD-ROM; ppec also allocated
the MAC and address and built the seed ISO). Prints medians and their ratio.

    .venv/bin/python bench/create.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import uuid

from localagent import PPEC, VIRSH, bridge, local_agent, run, timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    ppec_times, virsh_times, virsh_img_times = [], [], []
    with bridge(f"pbench{uuid.uuid4().hex[:6]}") as br, local_agent(
            "bench", f'\n[networks.bench]\nbridge = "{br}"\n', vrf="bench") as agent:
        root, env = agent.root, agent.env
        run(PPEC, "ip", "pool", "add", "bench", "--vrf", "bench", "--cidr", "10.214.0.0/24",
            env=env)
        key = root / "key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)
        for i in range(args.rounds):
            name, twin = f"bench-ppec-{i}", f"bench-virsh-{i}"
            ppec_times.append(timed([PPEC, "vm", "create", name, "--cpus", "1", "--memory",
                                     "64M", "--disk", "16M", "--host", "bench", "--ssh-key",
                                     f"{key}.pub"], env=env))
            xml = run(*VIRSH, "dumpxml", "--inactive", name)
            xml = xml.replace(f"<name>{name}</name>", f"<name>{twin}</name>")
            xml = re.sub(r"<uuid>.*?</uuid>", "", xml)
            xml = re.sub(r"<mac address=[^>]*/>", "", xml)   # libvirt picks the twin's
            disk = root / "disks" / f"{name}.qcow2"
            twin_disk = root / f"{twin}.qcow2"
            xml = xml.replace(str(disk), str(twin_disk))
            # Its own console log too: virtlogd holds one writer per file.
            xml = xml.replace(f"console/{name}.log", f"console/{twin}.log")
            (root / f"{twin}.xml").write_text(xml)
            img = ["qemu-img", "create", "-q", "-f", "qcow2", str(twin_disk), "16M"]
            define = [*VIRSH, "define", str(root / f"{twin}.xml")]
            start = [*VIRSH, "start", twin]
            if i % 2 == 0:
                run(*img)
                virsh_times.append(timed(define, start))
            else:
                virsh_img_times.append(timed(img, define, start))
            run(*VIRSH, "destroy", twin)
            run(*VIRSH, "undefine", twin)
            twin_disk.unlink()
            run(PPEC, "vm", "delete", name, env=env)
    p, v = statistics.median(ppec_times), statistics.median(virsh_times)
    vi = statistics.median(virsh_img_times) if virsh_img_times else float("nan")
    print(f"rounds: {args.rounds} (domain type from the agent's probe; 1 vCPU, 64 MiB, "
          f"16 MiB qcow2, a virtio NIC on a bridge, a cloud-init seed)")
    print(f"ppec vm create (CLI process + agent + qemu-img + define + start): "
          f"median {p * 1000:.0f} ms")
    print(f"virsh define + virsh start:                  median {v * 1000:.0f} ms")
    print(f"qemu-img create + virsh define + virsh start: median {vi * 1000:.0f} ms")
    print(f"ratio ppec / (virsh define + start):            {p / v:.2f}")
    print(f"ratio ppec / (qemu-img + virsh define + start): {p / vi:.2f}")


if __name__ == "__main__":
    main()
