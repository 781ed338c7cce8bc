"""What the agent-syncer tests share: copies of ppec as other releases (older, newer, or
one whose agent cannot start), asking an agent over its socket, and stopping whatever
process serves an agent now (after an automatic rollback the watchdog child became the
agent: another PID than the one the test started)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

import ppec
from ppec.wire import bundle as files
from ppec.wire import protocol
from tests.realparts import Agent


def copy_as(where: Path, version: str, edit: dict[str, tuple[str, str]] | None = None
            ) -> Path:
    """A copy of this ppec as release ``version``, with ``edit`` {file: (old, new)} text
    replacements; returns its PYTHONPATH dir."""
    pkg = where / "site" / "ppec"
    shutil.copytree(files.package_root(), pkg, ignore=shutil.ignore_patterns("__pycache__"))
    init = pkg / "__init__.py"
    init.write_text(init.read_text().replace(f'"{ppec.__version__}"', f'"{version}"'))
    for name, (old, new) in (edit or {}).items():
        text = (pkg / name).read_text()
        assert old in text, (name, old)
        (pkg / name).write_text(text.replace(old, new, 1))
    return pkg.parent


SERVE = "def serve(config_path: str | None, log_level: str = \"INFO\") -> int:\n"


def broken_copy(where: Path, how: str = "exits", version: str = "0.2.0") -> Path:
    """A newer release that imports (it passes the agent's import check) but whose agent
    cannot start: ``exits`` at once, or ``hangs`` without ever serving."""
    body = {"exits": "    raise SystemExit('this release cannot start')\n",
            "hangs": "    import time as _t\n    _t.sleep(3600)\n"}[how]
    return copy_as(where, version, {"agent/daemon.py": (SERVE, SERVE + body)})


def call(sock: Path, method: str, params: dict[str, Any] | None = None,
         timeout: float = 30) -> dict[str, Any]:
    """One request straight to the agent's socket: the whole reply."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(protocol.encode(protocol.request(1, method, params or {})))
        return dict(json.loads(s.makefile("rb").readline()))


def manifest(agent: Agent) -> dict[str, Any]:
    reply = call(agent.socket, "agent.manifest")
    assert reply["ok"], reply
    return dict(reply["result"])


def answers(agent: Agent) -> dict[str, Any] | None:
    try:
        return manifest(agent)
    except (OSError, ValueError, AssertionError):
        return None


def wait_answer(agent: Agent, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = answers(agent)
        if got is not None:
            return got
        time.sleep(0.05)
    raise AssertionError(f"agent {agent.host} did not answer within {timeout:.0f} s")


def stop(agent: Agent) -> None:
    """Kill the agent the test started and whatever process serves its socket now."""
    got = answers(agent)
    agent.kill()
    if got is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(got["pid"]), signal.SIGKILL)


def proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def stopped(pid: int) -> bool:
    """Every thread of ``pid`` stopped (T): none can run on past the step."""
    tasks = list(Path(f"/proc/{pid}/task").glob("*"))
    return bool(tasks) and all(proc_state_of(t / "stat") == "T" for t in tasks)


def proc_state_of(stat: Path) -> str:
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def releases_dir(agent: Agent) -> Path:
    return agent.root / "state" / "releases"


def pointer(agent: Agent) -> dict[str, Any]:
    return dict(json.loads((releases_dir(agent) / "pointer.json").read_text()))


def accepted(agent: Agent) -> dict[str, dict[str, str]]:
    """digest -> manifest of every release on the host, read from its files."""
    out = {}
    for info in releases_dir(agent).glob("*/release.json"):
        out[info.parent.name] = dict(json.loads(info.read_text())["files"])
    return out
