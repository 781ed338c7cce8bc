"""An install cut at every step (the CLI killed) finishes on the next run; uninstall is
refused while the host has a VM, then removes the agent and its line, nothing else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.bootstrap_parts import BootHost, agent_config, ppec_lines, ssh_as
from tests.realparts import PPEC, TEST_NODE_URI, Cli

CUTS = ["connect", "os", "packages", "ppec: sending", "ppec", "config", "agent",
        "forced command", "agent answers"]


@pytest.fixture
def host(tmp_path: Path, sshd_ready: None) -> Iterator[BootHost]:
    h = BootHost(tmp_path / "host", "127.0.0.42", tmp_path / "keys").start()
    yield h
    h.stop()


def _fingerprint(h: BootHost) -> str:
    assert h.sshd is not None
    out = subprocess.run(["ssh-keygen", "-lf", str(h.sshd.host_key.with_suffix(".pub"))],
                         capture_output=True, text=True, check=True).stdout
    return out.split()[1]


def _cut(cli: Cli, args: list[str], after: str) -> list[str]:
    """Run the install and SIGKILL it as soon as it reports ``after`` (a step done, or
    a moment into the wheels' transfer): the lines it printed."""
    proc = subprocess.Popen([PPEC, *args], env=cli.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line.rstrip())
        if line.startswith(f"{after}:") if ":" not in after else line.startswith(after):
            if ":" in after:
                time.sleep(0.5)   # into the transfer and pip
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, seen
    return seen


def _agents(h: BootHost) -> list[int]:
    want = f"{h.root}/opt/ppec/bin/ppec-agent".encode()   # the serving agents
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if want in argv and b"serve" in argv:   # not a session's proxy
                    out.append(int(pid))
            except OSError:
                continue
    return out


def test_an_install_killed_at_each_step_completes_on_the_next_run(
        cli: Cli, host: BootHost, tmp_path: Path) -> None:
    given = agent_config(tmp_path / "given.toml", host, "bm-2", TEST_NODE_URI)
    args = host.add_args("bm-2", "--agent-config", str(given),
                         "--host-key-fingerprint", _fingerprint(host))
    for step in CUTS:
        _cut(cli, args, step)
        assert len(ppec_lines(host)) <= 1
        assert len(_agents(host)) <= 1, f"two agents after a cut at {step}"
    done = cli.run(*args, "-o", "json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert [s["step"] for s in doc["steps"]][-2:] == ["agent answers", "inventory"]
    # the last cut left at most the inventory (the CLI may have added it before the kill)
    assert set(doc["changed"]) <= {"inventory"}, doc["steps"]
    assert len(ppec_lines(host)) == 1
    assert len(_agents(host)) == 1
    assert not (host.root / "var" / "tmp" / "ppec-bootstrap").exists()   # staging gone
    hosts = json.loads(cli.ok("host", "list", "-o", "json").stdout)["hosts"]
    assert [h["name"] for h in hosts] == ["bm-2"]


def test_uninstall_waits_for_the_vms_then_removes_only_what_it_wrote(
        cli: Cli, host: BootHost, tmp_path: Path) -> None:
    given = agent_config(tmp_path / "given.toml", host, "bm-3", TEST_NODE_URI)
    cli.ok(*host.add_args("bm-3", "--agent-config", str(given), "--accept-new-host-key"))
    others = [ln for ln in host.authorized_keys.read_text().splitlines()
              if ln not in ppec_lines(host)]
    cli.ok("vm", "create", "keep", "--host", "bm-3", "--cpus", "1", "--memory", "64M",
           "--disk", "16M")
    remove = ["host", "remove", "bm-3", "--uninstall", "--bootstrap-identity",
              str(host.bootstrap), "--install-root", str(host.root)]
    refused = cli.run(*remove)
    assert refused.returncode == 2 and "still has VMs" in refused.stderr
    assert len(ppec_lines(host)) == 1 and host.agent_pid() is not None

    cli.ok("vm", "delete", "keep")
    pid = host.agent_pid()
    done = cli.run(*remove)
    assert done.returncode == 0, done.stderr
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    assert ppec_lines(host) == []
    assert host.authorized_keys.read_text().splitlines() == others
    assert not (host.root / "opt" / "ppec").exists() and not host.config.exists()
    assert json.loads(cli.ok("host", "list", "-o", "json").stdout)["hosts"] == []
    assert ssh_as(host.bootstrap, host, "id").stdout.startswith("uid=0(root)")
