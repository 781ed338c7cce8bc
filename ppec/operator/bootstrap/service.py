"""The agent as a service on its host: ppec-agent.service under systemd, else a process
started directly (setsid, a PID file) where PID 1 is something else (a container)."""

from __future__ import annotations

import hashlib
import json
import shlex

from ppec.operator.bootstrap.layout import Layout
from ppec.operator.bootstrap.remote import BootstrapFailed, RootShell, Same

# Asked on the host with the installed Python: the agent's ping through its socket.
_PING = """
import json, socket, sys, time
deadline = time.monotonic() + float(sys.argv[2])
while True:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    try:
        s.connect(sys.argv[1])
        s.sendall(b'{"v":1,"id":0,"method":"ping","params":{}}\\n')
        line = s.makefile("rb").readline()
        if b'"ok":true' in line:
            print(line.decode().strip())
            sys.exit(0)
    except OSError:
        pass
    finally:
        s.close()
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.1)
"""


def has_systemd(shell: RootShell) -> bool:
    return shell.run("test -d /run/systemd/system").rc == 0


def ping(shell: RootShell, layout: Layout, socket: str, wait: float) -> dict[str, object] | None:
    """The agent's ping answer on the host, waiting up to ``wait`` seconds; None if none."""
    done = shell.run(f"{shlex.quote(layout.python)} -P -c {shlex.quote(_PING)} "
                     f"{shlex.quote(socket)} {wait}", timeout=wait + 30)
    if done.rc != 0:
        return None
    result = json.loads(done.out.strip().splitlines()[-1]).get("result", {})
    return result if isinstance(result, dict) else None


def _pid_running(shell: RootShell, layout: Layout) -> str:
    """The directly started agent's PID if that process is still our agent, else ""."""
    want = shlex.quote(f"{layout.agent} serve --config {layout.config}")
    done = shell.run(f"pid=$(cat {shlex.quote(layout.pidfile)} 2>/dev/null) && "
                     f"[ -n \"$pid\" ] && tr '\\0' ' ' < /proc/$pid/cmdline | "
                     f"grep -qF -- {want} && echo $pid")
    return done.out.strip() if done.rc == 0 else ""


def _stop_direct(shell: RootShell, layout: Layout) -> None:
    pid = _pid_running(shell, layout)
    if pid:
        shell.check(f"kill -TERM {pid}; for i in $(seq 1 300); do "
                    f"kill -0 {pid} 2>/dev/null || exit 0; sleep 0.1; done; "
                    f"kill -KILL {pid}", "stopping the agent")
    shell.run(f"rm -f {shlex.quote(layout.pidfile)}")


def _start_direct(shell: RootShell, layout: Layout) -> None:
    q = shlex.quote
    shell.check(f"mkdir -p \"$(dirname {q(layout.pidfile)})\" \"$(dirname {q(layout.log)})\"",
                "making the agent's run and log dirs")
    # setsid: its own session, so the SSH session's end does not reach it; $! is the
    # agent's PID (a background job is no group leader: setsid execs without forking)
    shell.check(f"setsid {shlex.join(layout.serve_argv())} </dev/null >>{q(layout.log)} 2>&1 "
                f"& echo $! > {q(layout.pidfile)}.new && "
                f"mv -f {q(layout.pidfile)}.new {q(layout.pidfile)}", "starting the agent")


def _systemd(shell: RootShell, layout: Layout, restart: bool) -> str:
    unit = layout.unit_text().encode()
    changed = shell.read(layout.unit) != unit
    if changed:
        shell.write(layout.unit, unit)
        shell.check("systemctl daemon-reload", "systemctl daemon-reload")
    shell.check("systemctl enable --quiet ppec-agent.service", "enabling ppec-agent.service")
    active = shell.run("systemctl is-active --quiet ppec-agent.service").rc == 0
    if active and not (restart or changed):
        return Same("running")
    shell.check("systemctl restart ppec-agent.service", "starting ppec-agent.service")
    return "restarted" if active else "started"


def config_stamp(config: bytes, digest: str) -> bytes:
    """What the running agent was started with: a restart is due when it differs."""
    return f"{hashlib.sha256(config).hexdigest()} {digest}\n".encode()


def ensure_running(shell: RootShell, layout: Layout, socket: str, config: bytes,
                   digest: str) -> str:
    """Start the agent, or restart it when it runs other files or another config;
    returns what was done ("running" when nothing)."""
    stamp_path = layout.stamp
    want = config_stamp(config, digest)
    stale = shell.read(stamp_path) != want
    if has_systemd(shell):
        outcome = _systemd(shell, layout, stale)
    else:
        running = _pid_running(shell, layout)
        answer = ping(shell, layout, socket, 0) if running else None
        if running and not stale and answer and answer.get("digest") == digest:
            return Same("running")
        _stop_direct(shell, layout)
        _start_direct(shell, layout)
        outcome = "restarted" if running else "started"
    answer = ping(shell, layout, socket, 60)
    if answer is None:
        tail = shell.run(f"tail -n 20 {shlex.quote(layout.log)} 2>/dev/null").out
        raise BootstrapFailed(f"the agent did not answer on {socket} within 60 s"
                              + (f"; its log ends:\n{tail.strip()}" if tail.strip() else ""))
    if answer.get("digest") != digest:
        raise BootstrapFailed(f"the agent answers with release {answer.get('digest')}, "
                              f"not the installed {digest}")
    shell.write(stamp_path, want, mode="600")
    return outcome


def stop(shell: RootShell, layout: Layout) -> None:
    if has_systemd(shell):
        shell.run("systemctl disable --now --quiet ppec-agent.service")
        shell.run(f"rm -f {shlex.quote(layout.unit)} && systemctl daemon-reload")
    else:
        _stop_direct(shell, layout)
