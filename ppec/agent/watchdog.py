"""Health after an update, decided by the old code.

Before the daemon re-executes itself on new files it forks: the parent (same PID) becomes
the new agent, the child keeps the old code in its memory. The child waits for the new
agent to answer ``agent.manifest`` on the socket with the new digest (a new boot id)
within ``health_timeout``. If it does not, the child kills what runs there (the new code;
VMs are libvirtd's children and are not touched), puts the previous release back through
the same staged, checked, atomic exchange, records the failed release in the pointer, and
becomes the agent itself on the old files (exec: a new PID), unless ``supervised`` says a
service manager restarts it. Under systemd (contrib/ppec-agent.service) the unit says
``KillMode=process``, so this child outlives a crashed main process, ``Restart=always``
and ``supervised = true`` in agent.toml.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import NoReturn

from ppec.agent import files
from ppec.agent.config import AgentConfig
from ppec.agent.releases import Releases
from ppec.wire import bundle as pkgfiles

log = logging.getLogger("ppec.agent.watchdog")


def ask(path: str, timeout: float = 2.0) -> dict[str, object] | None:
    """agent.manifest's result, or None when nothing answers (yet)."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(b'{"v":1,"id":1,"method":"agent.manifest"}\n')
            line = s.makefile("rb").readline()
        reply = json.loads(line)
        return dict(reply["result"]) if reply.get("ok") else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def healthy(config: AgentConfig, pid: int, want: str, old_boot: str) -> str:
    """'' when the new agent answered with ``want``; else why not."""
    deadline = time.monotonic() + config.health_timeout
    seen = "no answer"
    while time.monotonic() < deadline:
        got = ask(config.socket)
        if got is not None and got.get("boot_id") != old_boot:
            if got.get("digest") == want:
                return ""
            seen = f"answered with digest {str(got.get('digest'))[:12]}"
            break
        if not alive(pid):
            seen = "the new agent exited"
            break
        time.sleep(0.05)
    return seen if seen != "no answer" else \
        f"no answer within {config.health_timeout:.0f} s"


def run(config: AgentConfig, after: dict[str, str], pid: int, argv: list[str]) -> NoReturn:
    """The forked child: never returns (exits, or execs the agent on the old files)."""
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))   # the host lock and libvirt's stay behind
    try:
        why = healthy(config, pid, after["digest"], after["boot_id"])
        if not why:
            log.info("watchdog: release %s answers; done", after["digest"][:12])
            os._exit(0)
        log.error("watchdog: release %s failed its health check (%s); rolling back to %s",
                  after["digest"][:12], why, after["previous"][:12])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        restore(config, after, why)
    except Exception:
        log.exception("watchdog failed")
        os._exit(1)
    if config.supervised:   # the service manager starts the agent again, on these files
        log.info("watchdog: release %s back in place; the service manager restarts the "
                 "agent", after["previous"][:12])
        os._exit(0)
    log.info("watchdog: starting the agent on release %s", after["previous"][:12])
    for h in logging.getLogger().handlers:
        h.flush()
    os.execv(sys.executable, [sys.executable, *argv])


def restore(config: AgentConfig, after: dict[str, str], why: str) -> None:
    root = pkgfiles.package_root()
    releases = Releases(config.state_dir, root.name)
    info = releases.info(after["previous"])
    manifest = dict(info["files"])
    if pkgfiles.manifest(root) != manifest:
        files.install(root, manifest, releases.contents(after["previous"]), sys.executable)
    p = releases.pointer()
    p.current, p.previous = after["previous"], ""
    p.failed.append({"digest": after["digest"], "version": after["version"], "why": why,
                     "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    releases.save(p)
