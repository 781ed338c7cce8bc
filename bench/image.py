#!/usr/bin/env python3
"""`ppec image push` against `scp` of the same file over the same sshd, to one host and to
ten at once.

Builds real hosts on this machine: per host an agent (`ppec-agent serve` on libvirt's test
driver, its own image_dir) behind an OpenSSH sshd on its own loopback address (127.0.0.11,
.12, ...) whose operator key is forced to `ppec-agent proxy --socket ...`, as
tests/e2e/fleet.py does. A random-data raw image (nothing to compress or skip) is
registered with `ppec image add` (timed once), then, alternating, median of several:

- one host: `ppec image push NAME h1` (a fresh push: the host's by-digest copy is removed
  with `rm` before each round) against `scp FILE root@127.0.0.11:SCRATCH`;
- all hosts: `ppec image push NAME --all --max-parallel N` against N `scp` started at once.

scp logs in with a second key the benchmark adds to each host's authorized_keys WITHOUT the
forced command (the operator's key can only run the proxy), in its default SFTP mode (the
test sshd gets `Subsystem sftp internal-sftp`). Both sides use their own cipher defaults;
the negotiated ones are printed. The push's time includes what scp does not do: the host
fsyncs the image, hashes all of it and renames it into place before it answers. `sync`
runs (untimed) before every timed round, so no round pays for the previous one's dirty
pages. Everything (agents, sshds, keys, files) lives in one scratch dir under /var/tmp and
is removed at the end, also on failure or Ctrl-C.

    .venv/bin/python bench/image.py [--gib 1] [--hosts 10]      (as root)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.realparts import TEST_NODE_URI, Agent, Cli, Sshd, make_key, sshd_reason, unique

MIB = 1 << 20
GIB = 1 << 30
BLOCK = 16 * MIB
SCRATCH_PARENT = Path("/var/tmp")
MARGIN = 2 * GIB          # left free on /var/tmp beyond the benchmark's own files
SSH_OPTS = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new"]


@dataclass
class Host:
    name: str
    agent: Agent
    sshd: Sshd

    @property
    def image_dir(self) -> Path:
        return self.agent.root.parent / "images"

    @property
    def scp_dest(self) -> Path:
        return self.agent.root.parent / "scp" / "copy.raw"


def random_image(path: Path, size: int) -> None:
    """``size`` bytes of os.urandom, written in 16 MiB blocks."""
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(BLOCK, left))
            f.write(block)
            left -= len(block)


def sizes(text: str) -> int:
    """GiB (fractions allowed) to bytes, rounded down to whole 16 MiB blocks."""
    size = int(float(text) * GIB) // BLOCK * BLOCK
    if size <= 0:
        raise argparse.ArgumentTypeError(f"{text} GiB is less than one 16 MiB block")
    return size


def gib(n: int) -> str:
    return f"{n / GIB:.3g} GiB"


def check(done: subprocess.CompletedProcess[str], what: str) -> str:
    if done.returncode != 0:
        raise SystemExit(f"{what} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def drop(path: Path) -> None:
    """``rm -f``: the host's image is 0444, root removes it all the same."""
    subprocess.run(["rm", "-f", str(path)], check=True)


def settle() -> None:
    """Dirty pages of the round before written out, outside the timing."""
    subprocess.run(["sync"], check=True)


@dataclass
class Bench:
    root: Path
    cli: Cli
    scp_key: Path
    known_hosts: Path
    hosts: list[Host]

    def scp_cmd(self, source: Path, h: Host) -> list[str]:
        return ["scp", "-q", "-i", str(self.scp_key), "-P", str(h.sshd.port), *SSH_OPTS,
                "-o", f"UserKnownHostsFile={self.known_hosts}", str(source),
                f"root@{h.sshd.address}:{h.scp_dest}"]

    def ssh_cipher(self, h: Host) -> str:
        done = subprocess.run(["ssh", "-v", "-i", str(self.scp_key), "-p", str(h.sshd.port),
                               *SSH_OPTS, "-o", f"UserKnownHostsFile={self.known_hosts}",
                               f"root@{h.sshd.address}", "true"],
                              capture_output=True, text=True, check=False, timeout=60)
        for line in done.stderr.splitlines():
            if "kex: client->server cipher:" in line:
                return line.split("cipher:", 1)[1].split("compression")[0].strip()
        return "?"

    def paramiko_cipher(self, h: Host, key: Path) -> str:
        """What ppec's own SSH connection negotiates with this sshd (it runs the proxy
        and leaves)."""
        from ppec.operator.fleet.ssh import SSHStream
        known = Path(self.cli.env["XDG_CONFIG_HOME"]) / "ppec" / "known_hosts"
        stream = SSHStream(address=h.sshd.address, port=h.sshd.port, username="root",
                           identity=str(key), known_hosts=known, command="ppec-agent proxy",
                           timeout=30)
        try:
            t = stream.client.get_transport()
            assert t is not None
            return f"{t.local_cipher} MAC: {t.local_mac}"
        finally:
            stream.close()

    def push(self, name: str, *targets: str,
             parallel: int = 1) -> tuple[float, list[dict[str, Any]]]:
        """Wall time of one `ppec image push` and its JSON lines (each host must say
        pushed: a host that still had the image would make the round meaningless)."""
        args = ["image", "push", name, *targets, "-o", "json"]
        if parallel > 1:
            args += ["--max-parallel", str(parallel)]
        t = time.perf_counter()
        done = self.cli.run(*args, timeout=7200)
        took = time.perf_counter() - t
        lines = [json.loads(x) for x in check(done, "ppec image push").splitlines()]
        if any(x.get("state") != "pushed" for x in lines):
            raise SystemExit(f"ppec image push: not a fresh push on every host: {lines}")
        return took, lines

    def scp(self, source: Path, hosts: list[Host]) -> float:
        """Wall time of one scp per host, all started at once, all waited for."""
        procs: list[subprocess.Popen[str]] = []
        try:
            t = time.perf_counter()
            procs = [subprocess.Popen(self.scp_cmd(source, h), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True) for h in hosts]
            errors = [p.communicate()[1] for p in procs]
            took = time.perf_counter() - t
        finally:   # Ctrl-C or SIGTERM: no scp left writing into what is being removed
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        for h, p, err in zip(hosts, procs, errors, strict=True):
            if p.returncode != 0:
                raise SystemExit(f"scp to {h.name} failed ({p.returncode}): {err.strip()}")
            if h.scp_dest.stat().st_size != source.stat().st_size:
                raise SystemExit(f"scp to {h.name}: the copy has the wrong size")
        return took


def compare(bench: Bench, name: str, digest: str, source: Path, hosts: list[Host],
            rounds: int) -> tuple[list[float], list[float], list[float]]:
    """Alternating rounds of push and scp to ``hosts``: wall times, and ppec's own
    per-host seconds (connect to verified, without the CLI's start-up)."""
    push_t: list[float] = []
    scp_t: list[float] = []
    inner: list[float] = []
    targets = [h.name for h in hosts] if len(hosts) == 1 else ["--all"]
    for _ in range(rounds):
        for h in hosts:
            drop(h.image_dir / "by-digest" / digest)
            drop(h.scp_dest)
        settle()
        took, lines = bench.push(name, *targets, parallel=len(hosts))
        if len(lines) != len(hosts):
            raise SystemExit(f"ppec image push: {len(lines)} hosts answered, not {len(hosts)}")
        push_t.append(took)
        inner.append(max(x["seconds"] for x in lines))
        for h in hosts:
            drop(h.image_dir / "by-digest" / digest)
        settle()
        scp_t.append(bench.scp(source, hosts))
    for h in hosts:
        drop(h.image_dir / "by-digest" / digest)
        drop(h.scp_dest)
    return push_t, scp_t, inner


def report(push_label: str, scp_label: str, size: int, count: int, push_t: list[float],
           scp_t: list[float], inner: list[float]) -> None:
    p, s, i = statistics.median(push_t), statistics.median(scp_t), statistics.median(inner)
    total = size * count / MIB

    def line(label: str, median: float, runs: list[float]) -> str:
        return (f"  {label:<47} median {median:7.2f} s {total / median:5.0f} MiB/s  "
                f"(runs: {', '.join(f'{x:.2f}' for x in runs)})")
    print(line(push_label, p, push_t))
    print(f"    {'of it, ppec on the wire (connect to verified)':<45} median {i:7.2f} s "
          f"{'':11}  (the rest: the CLI's start-up, the store)")
    print(line(scp_label, s, scp_t))
    print(f"  ratio push / scp: {p / s:.2f}x (target <= 1.3x)")


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="ppec-bench-image-", dir=SCRATCH_PARENT))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def hosts_up(root: Path, count: int, operator_pub: str, scp_pub: str) -> Iterator[list[Host]]:
    """``count`` hosts, each an agent with its own image_dir behind its own sshd; every
    part started is stopped again, whatever happens."""
    hosts: list[Host] = []
    started: list[Agent | Sshd] = []
    try:
        for i in range(count):
            name = f"h{i + 1}"
            agent = Agent(root / name / "agent", host=unique(name), libvirt_uri=TEST_NODE_URI,
                          extra={"image_dir": str(root / name / "images")})
            started.append(agent)
            agent.start()
            sshd = Sshd(root / name / "sshd", address=f"127.0.0.{11 + i}",
                        agent_socket=agent.socket, operator_pubkey=operator_pub)
            started.append(sshd)
            sshd.start()
            allow_scp(sshd, scp_pub)
            (root / name / "scp").mkdir()
            hosts.append(Host(name, agent, sshd))
        yield hosts
    finally:
        for part in reversed(started):
            with contextlib.suppress(Exception):
                part.stop() if isinstance(part, Sshd) else part.kill()


def allow_scp(sshd: Sshd, pub: str) -> None:
    """The benchmark's own scp key, with no forced command (sshd reads authorized_keys at
    each login), and the SFTP subsystem scp uses by default (OpenSSH >= 9.0): added to the
    test sshd's config, which sshd re-reads on SIGHUP (it re-executes itself, same pid)."""
    with (sshd.root / "authorized_keys").open("a") as f:
        f.write(f"{pub}\n")
    with (sshd.root / "sshd_config").open("a") as f:
        f.write("Subsystem sftp internal-sftp\n")
    log = sshd.root / "sshd.log"
    assert sshd.proc is not None
    sshd.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while log.read_text(errors="replace").count("Server listening on") < 2:
        if sshd.proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"sshd on {sshd.address} did not come back after SIGHUP: "
                             + log.read_text(errors="replace")[-2000:])
        time.sleep(0.05)


def free_bytes() -> int:
    return shutil.disk_usage(SCRATCH_PARENT).free


def plan(size: int, hosts: int, fleet: int | None) -> int:
    """The image size for the all-hosts part (0: that part is skipped); refuses to start
    when even the one-host part does not fit."""
    free = free_bytes()
    one = 3 * size        # the source, the host's copy, scp's copy
    if one + MARGIN > free:
        raise SystemExit(f"not enough space on {SCRATCH_PARENT}: the one-host part needs "
                         f"{gib(one)} + {gib(MARGIN)} spare, {gib(free)} free (`df "
                         f"{SCRATCH_PARENT}`); try a smaller --gib")
    if hosts < 2:
        return 0
    def need(n: int) -> int:   # the source(s) and one copy per host (push or scp: not both)
        return size + (n if n != size else 0) + hosts * n
    if fleet is not None:
        if need(fleet) + MARGIN > free:
            raise SystemExit(f"not enough space on {SCRATCH_PARENT} for {hosts} x "
                             f"{gib(fleet)}: needs {gib(need(fleet))} + {gib(MARGIN)} spare, "
                             f"{gib(free)} free; try a smaller --fleet-gib")
        return fleet
    n = size
    while n >= BLOCK * 4 and need(n) + MARGIN > free:
        n = n // 2 // BLOCK * BLOCK
    return n if need(n) + MARGIN <= free else 0


def all_hosts(bench: Bench, args: argparse.Namespace, fleet_size: int, source: Path,
              digest: str) -> None:
    """The parallel part: every host at once, push against as many scp."""
    if not fleet_size:
        print(f"\n{args.hosts} hosts: skipped, {SCRATCH_PARENT} cannot hold {args.hosts} "
              f"copies of even {gib(BLOCK * 4)} ({gib(free_bytes())} free)")
        return
    if fleet_size == args.gib:
        fleet_source, fleet_digest, fleet_name = source, digest, "bench"
    else:
        fleet_source, fleet_name = bench.root / "fleet.raw", "bench-fleet"
        random_image(fleet_source, fleet_size)
        fleet_digest = json.loads(check(bench.cli.run(
            "image", "add", fleet_name, str(fleet_source), "-o", "json"),
            "ppec image add"))["digest"]
    note = "" if fleet_size == args.gib else \
        f" (smaller than --gib: {args.hosts} copies of that do not fit on {SCRATCH_PARENT})"
    print(f"\n{args.hosts} hosts at once, {gib(fleet_size)} each{note}, "
          f"{gib(fleet_size * args.hosts)} in all, {args.fleet_rounds} rounds each, "
          f"alternating:", flush=True)
    report(f"ppec image push {fleet_name} --all --max-parallel {args.hosts}",
           f"{args.hosts} x scp FILE root@HOST:SCRATCH, at once", fleet_size, args.hosts,
           *compare(bench, fleet_name, fleet_digest, fleet_source, bench.hosts,
                    args.fleet_rounds))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=sizes, default=GIB, help="image size in GiB (default 1)")
    ap.add_argument("--hosts", type=int, default=10, help="hosts in the parallel part")
    ap.add_argument("--fleet-gib", type=sizes, default=None,
                    help="image size for the parallel part (default: --gib, halved until "
                         "HOSTS copies fit on /var/tmp)")
    ap.add_argument("--rounds", type=int, default=3, help="one-host rounds of each")
    ap.add_argument("--fleet-rounds", type=int, default=2, help="all-hosts rounds of each")
    args = ap.parse_args()
    if (why := sshd_reason()) is not None:
        raise SystemExit(f"bench/image.py: {why}")
    if not 1 <= args.hosts <= 200:
        raise SystemExit("--hosts: 1 to 200 (127.0.0.11 onwards)")
    fleet_size = plan(args.gib, args.hosts, args.fleet_gib)
    # A SIGTERM ends the run like Ctrl-C: through every finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with scratch() as root:
        keys = root / "keys"
        keys.mkdir()
        operator_key, scp_key = keys / "operator_ed25519", keys / "scp_ed25519"
        operator_pub, scp_pub = make_key(operator_key), make_key(scp_key)
        cli = Cli(root / "operator")
        print(f"cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (other work "
              f"on this machine shows in the times), scratch: {root} ({gib(free_bytes())} "
              f"free on {SCRATCH_PARENT})", flush=True)
        with hosts_up(root / "fleet", max(args.hosts, 1), operator_pub, scp_pub) as hosts:
            for h in hosts:
                check(cli.run("host", "add", h.name, "--address", h.sshd.address, "--port",
                              str(h.sshd.port), "--user", "root", "--identity",
                              str(operator_key), "--accept-new-host-key"), "ppec host add")
            bench = Bench(root, cli, scp_key, root / "scp_known_hosts", hosts)
            one = hosts[0]
            print(f"hosts: {len(hosts)} x (agent on libvirt's test driver, own image_dir, "
                  f"behind sshd on 127.0.0.{11}..{10 + len(hosts)})")
            print(f"ppec: paramiko, {bench.paramiko_cipher(one, operator_key)}; key forced "
                  f"to `ppec-agent proxy`")
            print(f"scp:  OpenSSH {bench.ssh_cipher(one)}; a second authorized key with NO "
                  f"forced command, added for the benchmark's scp only")
            source = root / "image.raw"
            t = time.perf_counter()
            random_image(source, args.gib)
            print(f"\nimage: {gib(args.gib)} of os.urandom in 16 MiB blocks, written in "
                  f"{time.perf_counter() - t:.1f} s", flush=True)
            t = time.perf_counter()
            added = check(cli.run("image", "add", "bench", str(source), "-o", "json"),
                          "ppec image add")
            digest = json.loads(added)["digest"]
            print(f"ppec image add bench FILE (sha256 + qemu-img info, once): "
                  f"{time.perf_counter() - t:.2f} s")

            print(f"\none host ({one.name}, {one.sshd.address}), {gib(args.gib)}, "
                  f"{args.rounds} rounds each, alternating:", flush=True)
            report(f"ppec image push bench {one.name}",
                   f"scp FILE root@{one.sshd.address}:SCRATCH", args.gib, 1,
                   *compare(bench, "bench", digest, source, [one], args.rounds))

            if args.hosts >= 2:
                all_hosts(bench, args, fleet_size, source, digest)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}; removed: agents, sshds, "
          f"keys, images, copies")


if __name__ == "__main__":
    main()
