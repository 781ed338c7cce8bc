#!/usr/bin/env python3
"""`ppec host add --install` on a host that already has the Debian packages, against the
same steps done by a shell script with OpenSSH's scp and ssh, in the same run.

Each run installs into a fresh install root behind its own real sshd on a loopback address
(tests/e2e/bootstrap_parts.py; an agent on libvirt's test driver). The script gets the
same wheels already built (ppec builds its own inside the timed command: `wheels_s` says
what that costs) and does: read os-release, check the packages, scp the wheels, check
their SHA-256, make the venv, pip install, write the config, start the agent and wait for
its socket, append the forced-command line, ping through it with ssh. Also timed: a second
`--install` on the finished host (nothing to do). Where ppec differs: it builds its wheels
while the host answers the first steps, sends them as one tar stream, and makes the venv
without ensurepip, running pip from the pip wheel it sent (ensurepip's install of pip is
most of a fresh venv's ~2 s); the script makes a standard venv.

2026-12-08, this machine (2 cores), 3 runs: --install 4.99 s against the script's 5.29 s
(0.94x; 8.32 s and 1.61x before the three changes above), a second --install 1.65 s.

    .venv/bin/python bench/bootstrap.py [--runs 3] [--json]      (as root)
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ppec.operator.bootstrap import authkeys, wheels
from ppec.operator.bootstrap.layout import PACKAGES, Layout
from tests.e2e.bootstrap_parts import BootHost, agent_config
from tests.realparts import PPEC, TEST_NODE_URI, Cli

PING = '{"v":1,"id":0,"method":"ping","params":{}}'


def ppec_install(h: BootHost, cli: Cli, config: Path) -> tuple[float, float]:
    """The first install and a second one on the finished host."""
    args = h.add_args("bm", "--agent-config", str(config), "--accept-new-host-key")
    out = []
    for _ in range(2):
        t = time.perf_counter()
        done = subprocess.run([PPEC, *args], env=cli.env, capture_output=True, text=True,
                              check=False)
        out.append(time.perf_counter() - t)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
    return out[0], out[1]


def script_install(h: BootHost, config: Path, built: list[wheels.Wheel]) -> float:
    assert h.sshd is not None
    lay, stage = Layout(str(h.root)), f"{h.root}/var/tmp/stage"
    local = Path(tempfile.mkdtemp(prefix="ppec-bench-wheels-"))
    for w in built:
        (local / w.filename).write_bytes(w.data)
    known = h.keys / "known_hosts"
    pub = h.sshd.host_key.with_suffix(".pub").read_text().split()
    known.write_text(f"[{h.address}]:{h.sshd.port} {pub[0]} {pub[1]}\n")
    opts = ["-i", str(h.bootstrap), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={known}"]
    target = f"root@{h.address}"

    def ssh(cmd: str, key: Path | None = None, stdin: str = "") -> str:
        o = opts if key is None else [*opts[:1], str(key), *opts[2:]]
        return subprocess.run(["ssh", *o, "-p", str(h.sshd.port), target, cmd],  # type: ignore[union-attr]
                              input=stdin, capture_output=True, text=True, check=True).stdout

    socket = f"{h.root}/run/ppec/agent.sock"
    line = authkeys.forced_line(lay.agent, socket, h.operator_pub)
    t = time.perf_counter()
    ssh("cat /etc/os-release >/dev/null && dpkg-query -W " + " ".join(PACKAGES) + " >/dev/null"
        f" && mkdir -p {stage}")
    subprocess.run(["scp", "-O", "-q", *opts, "-P", str(h.sshd.port), *map(str, local.iterdir()),
                    f"{target}:{stage}/"], check=True)
    sums = "\n".join(f"{w.sha256}  {stage}/{w.filename}" for w in built) + "\n"
    ssh(f"sha256sum -c --quiet && python3 -m venv {lay.venv} && {lay.python} -m pip install "
        f"-q --no-index --no-deps {stage}/*.whl", stdin=sums)
    subprocess.run(["scp", "-O", "-q", *opts, "-P", str(h.sshd.port), str(config),
                    f"{target}:{lay.config}"], check=True)
    ssh(f"mkdir -p {h.root}/run; setsid {shlex.join(lay.serve_argv())} </dev/null "
        f">>{h.root}/agent.log 2>&1 & echo $! > {lay.pidfile}; "
        f"until [ -S {socket} ]; do sleep 0.05; done; "
        f"echo {shlex.quote(line)} >> {lay.authorized_keys}")
    answer = ssh("ping", key=h.operator, stdin=PING + "\n")
    elapsed = time.perf_counter() - t
    assert '"ok":true' in answer or '"ok": true' in answer, answer
    return elapsed


def one(kind: str, root: Path, built: list[wheels.Wheel], i: int) -> dict[str, float]:
    h = BootHost(root / f"{kind}{i}", f"127.0.0.{60 + i}", root / f"{kind}{i}-keys").start()
    (h.root / "etc" / "ppec").mkdir(parents=True, exist_ok=True)
    config = agent_config(root / f"{kind}{i}.toml", h, "bm", TEST_NODE_URI)
    try:
        if kind == "ppec":
            first, again = ppec_install(h, Cli(root / f"cli{i}"), config)
            return {"first_s": first, "again_s": again}
        return {"script_s": script_install(h, config, built)}
    finally:
        h.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    t = time.perf_counter()
    built, _ = wheels.agent_wheels()
    wheels_s = time.perf_counter() - t
    root = Path(tempfile.mkdtemp(prefix="ppec-bench-boot-"))
    runs: dict[str, list[float]] = {"first_s": [], "again_s": [], "script_s": []}
    for i in range(a.runs):
        for kind in ("script", "ppec"):
            for k, v in one(kind, root, built, i).items():
                runs[k].append(v)
    med = {k: statistics.median(v) for k, v in runs.items()}
    doc = {**{k: round(v, 2) for k, v in med.items()}, "wheels_s": round(wheels_s, 2),
           "ratio_install_vs_script": round(med["first_s"] / med["script_s"], 2),
           "ratio_rerun_vs_script": round(med["again_s"] / med["script_s"], 2),
           "runs": a.runs}
    if a.json:
        print(json.dumps(doc))
        return
    print(f"ppec host add --install, fresh host:  {med['first_s']:.2f} s (median of {a.runs})")
    print(f"  of which building the wheels:        {wheels_s:.2f} s")
    print(f"ppec host add --install, again:        {med['again_s']:.2f} s")
    print(f"shell script (scp + ssh), fresh host:  {med['script_s']:.2f} s")
    print(f"ratio install / script: {doc['ratio_install_vs_script']}x, "
          f"rerun / script: {doc['ratio_rerun_vs_script']}x")


if __name__ == "__main__":
    main()
