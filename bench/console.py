#!/usr/bin/env python3
"""`ppec vm console` over real sshd and the forced command, against `virsh console` on
the host itself, on the same booted test guest (root, real libvirtd + QEMU under TCG).

Three figures, each ppec against virsh in the same run: the time until the session is up
(greeting on screen), a keystroke round trip (`echo N-$((N+1))` typed, its answer seen;
median of --rounds), and a burst of output (`yes | head -n LINES` until its end marker).
"Session up" is also set against `ppec vm show` (one call over SSH): virsh has no SSH.

    .venv/bin/python bench/console.py [--rounds 15] [--lines 3000]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.fleet import make_fleet
from tests.e2e.terminal import PtyRun, guest_boot_args, libvirt_console_held
from tests.realparts import QEMU_SCRATCH, QEMU_URI, Cli, make_key, unique, wait_until

GUEST = Path("/var/cache/ppec-tests/guest")


def session(term: PtyRun, greeting: bytes, rounds: int, lines: int) -> dict[str, float]:
    t = time.perf_counter()
    term.expect(greeting)
    up = time.perf_counter() - t
    term.type(b"\r")
    term.expect(b"# ")
    trips = []
    for n in range(rounds):
        t = time.perf_counter()
        term.type(f"echo {n}-$(({n}+1))\r".encode())
        term.expect(f"{n}-{n + 1}\r\n".encode())
        trips.append(time.perf_counter() - t)
    t = time.perf_counter()
    term.type(f"yes burst | head -n {lines}; echo END-$((6*7))\r".encode())
    term.expect(b"END-42", timeout=600)
    burst = time.perf_counter() - t
    term.type(b"\x1d")
    term.wait()
    term.close()
    return {"up": up, "trip": statistics.median(trips), "burst": burst}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--lines", type=int, default=3000)
    args = ap.parse_args()
    QEMU_SCRATCH.mkdir(mode=0o711, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench-console-", dir=QEMU_SCRATCH))
    root.chmod(0o711)
    key = root / "operator_ed25519"
    (host,) = make_fleet(root / "fleet", 1, QEMU_URI, make_key(key),
                         extra={"image_dir": str(GUEST), "domain_type": "qemu",
                                "cpu_overcommit": 12.0})
    cli = Cli(root / "operator")
    vm = unique("bench-con")
    try:
        cli.ok(*host.add_args(key), "--accept-new-host-key")
        cli.ok("vm", "create", vm, *guest_boot_args(GUEST))
        wait_until(lambda: "PPEC-GUEST-UP" in host.agent.console(vm).text(), 120, "boot")
        ppec = session(PtyRun(["vm", "console", vm], cli.env), b"Leave with Ctrl-]",
                       args.rounds, args.lines)
        wait_until(lambda: not libvirt_console_held(vm), 30, "console released")
        virsh = session(PtyRun(["-c", QEMU_URI, "console", vm], cli.env,
                               program=shutil.which("virsh") or "virsh"),
                        b"Escape character is", args.rounds, args.lines)
        # What any ppec command over SSH costs (process start, handshake, one call): the
        # part of "session up" that is not the console.
        shows = []
        for _ in range(5):
            t = time.perf_counter()
            cli.ok("vm", "show", vm)
            shows.append(time.perf_counter() - t)
        show = statistics.median(shows)
        print(f"console of one TCG guest; ppec over sshd + forced command, virsh on the host; "
              f"{args.rounds} round trips, {args.lines}-line burst")
        print(f"{'ppec vm show (one call, SSH)':32} ppec {show * 1000:8.1f} ms   session up / "
              f"vm show {ppec['up'] / show:5.2f}")
        for what, label in (("up", "session up"), ("trip", "keystroke round trip (median)"),
                            ("burst", f"{args.lines}-line burst")):
            print(f"{label:32} ppec {ppec[what] * 1000:8.1f} ms   virsh "
                  f"{virsh[what] * 1000:8.1f} ms   ratio {ppec[what] / virsh[what]:5.2f}")
    finally:
        cli.run("vm", "delete", vm)
        host.sshd.stop()
        host.agent.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
