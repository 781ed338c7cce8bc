#!/usr/bin/env python3
"""`ppec disk attach` + `ppec disk detach` against the same work done with virsh.

Runs on this machine's real libvirtd + QEMU through a local agent (as root), on a VM that
boots the test guest (tests/guest/build.sh, under TCG), so every detach really waits for
the guest to release the disk. Each round times, on the same running guest:

  ppec:  disk attach VM --size 16M ; disk detach VM vdb
  virsh: qemu-img create ; virsh attach-disk --live --config ;
         virsh detach-disk --live --config (libvirt waits for the guest, up to 5 s) ; rm
  agent: disk.attach and disk.detach sent straight to the agent's socket (what ppec costs
         without the CLI's own start-up)

Prints medians per step and the ratios.

    .venv/bin/python bench/disk.py [--rounds 9]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from localagent import PPEC, VIRSH, LocalAgent, local_agent, run, timed

from ppec.wire import protocol

HERE = Path(__file__).resolve().parent


def agent_call(path: Path, method: str, **params: object) -> tuple[float, dict[str, object]]:
    """One request on the agent's socket, timed from send to reply."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(path))
        start = time.perf_counter()
        sock.sendall(protocol.encode(protocol.request(1, method, params)))
        reply = json.loads(sock.makefile("rb").readline())
    if not reply.get("ok"):
        sys.exit(f"{method}: {reply}")
    return time.perf_counter() - start, reply["result"]


def measure(agent: LocalAgent, guest: Path, vm: str, rounds: int,
            steps: dict[str, list[float]]) -> None:
    env = agent.env
    run(PPEC, "vm", "create", vm, "--cpus", "1", "--memory", "256M", "--disk", "64M",
        "--kernel", str(guest / "vmlinuz"), "--initrd", str(guest / "initrd.img"),
        "--cmdline", "console=ttyS0 quiet panic=-1", env=env)
    console = agent.root / "state" / "console" / f"{vm}.log"
    deadline = time.monotonic() + 120
    while "PPEC-DISKS" not in (console.read_text() if console.exists() else ""):
        if time.monotonic() > deadline:
            sys.exit("the guest did not boot within 120 s")
        time.sleep(0.2)
    for i in range(rounds):
        start = time.perf_counter()
        doc = json.loads(run(PPEC, "disk", "attach", vm, "--size", "16M", "-o", "json",
                             env=env))
        steps["ppec attach"].append(time.perf_counter() - start)
        steps["ppec detach"].append(timed([PPEC, "disk", "detach", vm, doc["target"]],
                                          env=env))
        took, done = agent_call(agent.socket, "disk.attach", name=vm, size_bytes=16 << 20)
        steps["agent attach"].append(took)
        steps["agent detach"].append(agent_call(agent.socket, "disk.detach", name=vm,
                                                target=done["target"])[0])
        vol = agent.root / f"virsh-{i}.qcow2"
        steps["virsh attach"].append(timed(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(vol), "16M"],
            [*VIRSH, "attach-disk", vm, str(vol), "vdb", "--subdriver", "qcow2",
             "--live", "--config"]))
        start = time.perf_counter()
        run(*VIRSH, "detach-disk", vm, "vdb", "--live", "--config")
        vol.unlink()
        steps["virsh detach"].append(time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    guest = Path(run(str(HERE.parent / "tests" / "guest" / "build.sh")).split()[-1])
    vm = f"bench-disk-{os.getpid()}"
    steps: dict[str, list[float]] = {k: [] for k in
                                     ("ppec attach", "ppec detach", "agent attach",
                                      "agent detach", "virsh attach", "virsh detach")}
    with local_agent("local", f'image_dir = "{guest}"\ndomain_type = "qemu"\n'
                              f'reserved_memory = "0"\n') as agent:
        try:
            measure(agent, guest, vm, args.rounds, steps)
        finally:
            subprocess.run([PPEC, "vm", "delete", vm], env=agent.env, capture_output=True,
                           check=False)
    med = {k: statistics.median(v) for k, v in steps.items()}
    print(f"{args.rounds} rounds on one running guest (TCG); medians:")
    for k, v in med.items():
        print(f"  {k:13} {v * 1000:7.0f} ms")
    for who in ("ppec", "agent"):
        for op in ("attach", "detach"):
            print(f"{op} ratio {who}/virsh: {med[f'{who} {op}'] / med[f'virsh {op}']:.2f}")
    total_p = med["ppec attach"] + med["ppec detach"]
    total_v = med["virsh attach"] + med["virsh detach"]
    print(f"attach+detach ratio:     {total_p / total_v:.2f}")


if __name__ == "__main__":
    main()
