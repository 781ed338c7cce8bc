"""`ppec host add --install` over a real sshd: from a root login with a bootstrap key to an
agent that builds a real VM through its forced command; a second run changes nothing.

The install root is a directory the test owns, so nothing here touches this machine's own
ppec; the agent runs the wheels bootstrap sent, from the root's /opt/ppec venv."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.bootstrap_parts import OTHER_LINES, BootHost, agent_config, ppec_lines, ssh_as
from tests.realparts import QEMU_URI, Cli, domain_state, unique, virsh


@pytest.fixture
def boot_host(qemu_dir: Path, sshd_ready: None) -> Iterator[BootHost]:
    host = BootHost(qemu_dir / "host", "127.0.0.41", qemu_dir / "keys").start()
    yield host
    host.stop()


def test_install_serves_a_real_vm_through_the_forced_command(
        cli: Cli, boot_host: BootHost, qemu_dir: Path) -> None:
    h = boot_host
    given = agent_config(qemu_dir / "given.toml", h, "bm-1", QEMU_URI, cpu_overcommit=12.0,
                         domain_type="qemu")
    before = h.authorized_keys.read_text().splitlines()
    done = cli.run(*h.add_args("bm-1", "--agent-config", str(given),
                               "--accept-new-host-key"))
    assert done.returncode == 0, done.stderr
    for line in ("packages ok", "ppec 0.1.0 installed", "agent started", "forced command set",
                 "agent answers"):
        assert line in done.stderr, done.stderr

    # authorized_keys: the others as they were, one forced line for the operator key
    lines = h.authorized_keys.read_text().splitlines()
    assert [ln for ln in lines if ln not in ppec_lines(h)] == before
    (forced,) = ppec_lines(h)
    assert forced.startswith(f'restrict,command="{h.root}/opt/ppec/bin/ppec-agent proxy '
                             f'--socket {h.root}/run/ppec/agent.sock" ')
    assert h.config.read_bytes() == given.read_bytes()
    assert h.agent_pid() is not None
    exe = Path(f"/proc/{h.agent_pid()}/cmdline").read_bytes().split(b"\0")
    assert exe[1].decode() == f"{h.root}/opt/ppec/bin/ppec-agent"   # the installed one

    # a real VM through sshd's forced command, checked with virsh
    name = unique("boot")
    cli.ok("vm", "create", name, "--host", "bm-1", "--cpus", "1", "--memory", "64M",
           "--disk", "16M")
    assert domain_state(name) == "running"
    assert name in virsh("list", "--name")
    cli.ok("vm", "delete", name)
    assert domain_state(name) is None

    # the operator key runs the proxy and nothing else
    # (asking for `id`, it still gets the proxy: a protocol line sent gets the agent's
    # answer; a failed login would answer nothing and fail here too)
    shell = ssh_as(h.operator, h, "id", stdin='{"v":1,"id":7,"method":"ping","params":{}}\n')
    assert shell.returncode == 0, shell.stderr
    assert "uid=" not in shell.stdout
    assert json.loads(shell.stdout)["result"]["host"] == "bm-1"
    assert ssh_as(h.bootstrap, h, "id").stdout.startswith("uid=0(root)")

    # the syncer sees the installed release as its own
    rows = json.loads(cli.ok("agent", "sync", "--dry-run", "-o", "json").stdout)
    assert [r["state"] for r in rows["hosts"]] == ["current"], rows

    # a second run: nothing changes, the agent keeps running
    files, pid = h.digests(), h.agent_pid()
    again = cli.run(*h.add_args("bm-1", "--agent-config", str(given), "-o", "json"))
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["changed"] == [], doc["steps"]
    assert h.digests() == files
    assert h.agent_pid() == pid
    assert len(ppec_lines(h)) == 1
    assert OTHER_LINES[1] in h.authorized_keys.read_text()
