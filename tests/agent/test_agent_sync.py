"""`ppec agent sync`: an agent running older files is brought to this ppec's files by
checksum and restarts on them, with its VMs untouched. The old agent runs from a copy of
the package (PYTHONPATH), so the update rewrites that copy, never this checkout."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import socket
import tarfile
from pathlib import Path

import pytest

import ppec
from ppec.wire import bundle as files
from ppec.wire import protocol
from tests.realparts import Agent, Cli, domain_state, qemu_pid, unique

TINY = ("--cpus", "1", "--memory", "64M", "--disk", "16M")


def old_copy(where: Path) -> Path:
    """A copy of ppec as an older release: another version string, one module it does
    not have yet, one module the new release dropped. Returns the PYTHONPATH dir."""
    pkg = where / "site" / "ppec"
    shutil.copytree(files.package_root(), pkg, ignore=shutil.ignore_patterns("__pycache__"))
    init = pkg / "__init__.py"
    init.write_text(init.read_text().replace(f'"{ppec.__version__}"', '"0.0.9"'))
    (pkg / "operator" / "disks.py").unlink()
    (pkg / "agent" / "retired.py").write_text("# dropped by the new release\n")
    return pkg.parent


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pid_cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_sync_brings_the_agent_to_this_version_and_vms_keep_running(
        cli: Cli, qemu_dir: Path) -> None:
    site = old_copy(qemu_dir)
    agent = Agent(qemu_dir / "agent", host=unique("s"), libvirt_uri="qemu:///system",
                  env={"PYTHONPATH": str(site)}).start()
    try:
        cli.ok("host", "add", "s", "--address", "local", "--socket", str(agent.socket))
        vm = unique("vm")
        cli.ok("vm", "create", vm, *TINY)
        qemu = qemu_pid(vm)
        assert agent.proc is not None
        pid = agent.proc.pid
        status = json.loads(cli.ok("agent", "status", "-o", "json").stdout)["agents"]
        assert status[0]["version"] == "0.0.9"

        dry = json.loads(cli.ok("agent", "sync", "--dry-run", "-o", "json").stdout)["hosts"]
        assert [(h["state"], h["version"], h["to"]) for h in dry] == [
            ("outdated", "0.0.9", ppec.__version__)]
        assert dry[0]["changed"] == ["__init__.py", "operator/disks.py"]
        assert dry[0]["removed"] == ["agent/retired.py"]
        assert (site / "ppec" / "agent" / "retired.py").exists()   # a dry run changes nothing

        done = json.loads(cli.ok("agent", "sync", "-o", "json").stdout)["hosts"]
        assert [(h["state"], h["version"], h["to"]) for h in done] == [
            ("updated", "0.0.9", ppec.__version__)]
        # The copy now holds exactly this checkout's files, checked by checksum.
        assert files.manifest(site / "ppec") == files.manifest(files.package_root())
        assert not (site / "ppec" / "agent" / "retired.py").exists()
        # The replaced package is kept beside it (the way back by hand), no staging left.
        assert (site / ".ppec-previous" / "agent" / "retired.py").exists()
        assert not list(site.glob(".ppec-update-*"))
        # The same process (exec, same PID), serving the new version; the VM never noticed.
        assert agent.proc.poll() is None and agent.proc.pid == pid
        assert "serve" in pid_cmdline(pid)
        status = json.loads(cli.ok("agent", "status", "-o", "json").stdout)["agents"]
        assert status[0]["version"] == ppec.__version__
        assert domain_state(vm) == "running" and qemu_pid(vm) == qemu
        listed = json.loads(cli.ok("vm", "list", "-o", "json").stdout)["vms"]
        assert [(v["name"], v["state"]) for v in listed] == [(vm, "running")]
        assert "restarting on the updated files" in agent.log()
        # Nothing left to do the second time.
        again = json.loads(cli.ok("agent", "sync", "-o", "json").stdout)["hosts"]
        assert [(h["state"], h["changed"]) for h in again] == [("current", [])]
        cli.ok("vm", "delete", vm)
    finally:
        agent.kill()


def _update(agent: Agent, manifest: dict[str, str], bundle: str, version: str = "9.9",
            digest: str | None = None) -> dict[str, object]:
    params = {"version": version, "manifest": manifest, "bundle": bundle,
              "digest": digest or files.digest(version, manifest)}
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(agent.socket))
        s.sendall(protocol.encode(protocol.request(1, "agent.update", params)))
        return dict(json.loads(s.makefile("rb").readline()))


def _bundle(entries: dict[str, bytes], link: str = "") -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
            tar.addfile(info)
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("case", ["escape", "checksum", "digest", "link", "extra",
                                  "entry-point-broken", "does-not-import"])
def test_bad_updates_are_refused_and_change_nothing(tmp_path: Path, case: str) -> None:
    site = old_copy(tmp_path)
    agent = Agent(tmp_path / "agent", host="t1", env={"PYTHONPATH": str(site)}).start()
    try:
        before = files.manifest(site / "ppec")
        want = dict(before)
        good = b"__version__ = '9.9'\n"
        want["__init__.py"] = sha(good)
        bundle = _bundle({"__init__.py": good})
        digest = None
        if case == "escape":
            want["../evil.py"] = sha(b"x")
            bundle = _bundle({"__init__.py": good, "../evil.py": b"x"})
            words = "is not a package file"
        elif case == "checksum":
            bundle = _bundle({"__init__.py": b"import os; os.system('id')\n"})
            words = "checksum does not match the manifest"
        elif case == "digest":
            digest = "0" * 64
            words = "the manifest does not match its digest"
        elif case == "link":
            bundle = _bundle({"__init__.py": good}, link="agent/x.py")
            words = "is not a regular file"
        elif case == "extra":
            bundle = _bundle({"__init__.py": good, "agent/sneaky.py": b"x"})
            words = "the manifest says"
        elif case == "entry-point-broken":
            # ppec-agent's own entry module (serve and sshd's proxy both start there).
            broken = b"def main(:\n"
            want["agent/main.py"] = sha(broken)
            bundle = _bundle({"__init__.py": good, "agent/main.py": broken})
            words = "the new files do not run"
        else:
            broken = b"raise ImportError('not this one')\n"
            want["agent/daemon.py"] = sha(broken)
            bundle = _bundle({"__init__.py": good, "agent/daemon.py": broken})
            words = "the new files do not run"
        reply = _update(agent, want, bundle, digest=digest)
        assert reply["ok"] is False, reply
        assert reply["error"]["code"] in ("BAD_UPDATE", "BAD_PARAMS"), reply  # type: ignore[index]
        assert words in reply["error"]["message"], reply  # type: ignore[index]
        assert files.manifest(site / "ppec") == before
        assert not (tmp_path / "evil.py").exists() and not (site / "evil.py").exists()
        assert not list(site.glob(".ppec-update-*")) and not (site / ".ppec-previous").exists()
        # Still the old agent, still serving.
        assert agent.proc is not None and agent.proc.poll() is None
        ping = _ping(agent)
        assert ping["version"] == "0.0.9"
    finally:
        agent.kill()


def _ping(agent: Agent) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(agent.socket))
        s.sendall(protocol.encode(protocol.request(1, "ping", {})))
        return dict(json.loads(s.makefile("rb").readline())["result"])


def test_under_policy_an_update_waits_for_a_second_person(cli: Cli, tmp_path: Path) -> None:
    from tests.policy import as_, install_policy, make_people
    people = make_people(tmp_path)
    approvers = install_policy(cli, tmp_path, people, '[approval.agent]\noperations = '
                                                      '["update"]\napprovers = ["sre"]\n')
    site = old_copy(tmp_path)
    agent = Agent(tmp_path / "agent", host="t1", env={"PYTHONPATH": str(site)},
                  extra={"approvers_file": str(approvers)}).start()
    try:
        cli.ok("host", "add", "t1", "--address", "local", "--socket", str(agent.socket))
        before = files.manifest(site / "ppec")
        # Straight to the agent, no approval: refused, nothing written.
        reply = _update(agent, files.manifest(files.package_root()), _bundle({}))
        assert reply["ok"] is False
        assert "agent.update needs an approved request" in reply["error"]["message"]  # type: ignore[index]
        held = as_(cli, people["alice"], "agent", "sync", "-o", "json")
        assert held.returncode == 4, held.stderr  # type: ignore[attr-defined]
        request = json.loads(held.stdout)  # type: ignore[attr-defined]
        assert request["operation"] == "agent.update"
        assert files.manifest(site / "ppec") == before
        # bob, running another install (one line differs), cannot approve files he does
        # not have: refused before he signs anything.
        other = tmp_path / "bob-site" / "ppec"
        shutil.copytree(files.package_root(), other,
                        ignore=shutil.ignore_patterns("__pycache__"))
        (other / "agent" / "files.py").write_text((other / "agent" / "files.py").read_text()
                                                  + "\n# bob's local change\n")
        refused = as_(cli, people["bob"], "request", "approve", str(request["id"]),
                      PYTHONPATH=str(other.parent))
        assert refused.returncode == 1, refused.stderr  # type: ignore[attr-defined]
        assert "are not the ones the request names" in refused.stderr  # type: ignore[attr-defined]
        shown = json.loads(cli.ok("request", "show", str(request["id"]), "-o", "json").stdout)
        assert shown["state"] == "pending" and not shown["checker"]
        done = as_(cli, people["bob"], "request", "approve", str(request["id"]), "-o", "json")
        assert done.returncode == 0, done.stderr  # type: ignore[attr-defined]
        result = json.loads(done.stdout)["result"]  # type: ignore[attr-defined]
        assert (result["state"], result["version"]) == ("updated", "0.0.9")
        assert files.manifest(site / "ppec") == files.manifest(files.package_root())
        assert _ping(agent)["version"] == ppec.__version__
    finally:
        agent.kill()


def test_a_checker_never_signs_files_other_than_their_own() -> None:
    """An agent.update request names a digest: approving it from an install whose files
    differ is refused before anything is signed."""
    from ppec.core.errors import Conflict
    from ppec.operator.makerchecker import _check_same_files
    here = files.digest(ppec.__version__, files.manifest(files.package_root()))
    assert _check_same_files({"params": {"digest": here, "version": ppec.__version__}})
    with pytest.raises(Conflict, match="are not the ones the request names"):
        _check_same_files({"params": {"digest": "e" * 64, "version": ppec.__version__}})


def test_the_first_host_is_a_canary_the_rest_wait_for_it(cli: Cli, qemu_dir: Path) -> None:
    """Host a (updated first) refuses: a disk detach there is waiting for its guest. Host
    b is then not touched at all, and says why."""
    import subprocess

    from tests.realparts import PPEC, wait_until
    site_a, site_b = old_copy(qemu_dir / "a"), old_copy(qemu_dir / "b")
    a = Agent(qemu_dir / "agent-a", host=unique("a"), libvirt_uri="qemu:///system",
              env={"PYTHONPATH": str(site_a)}, extra={"domain_type": "qemu"}).start()
    b = Agent(qemu_dir / "agent-b", host="t2", env={"PYTHONPATH": str(site_b)}).start()
    waiting = None
    try:
        cli.ok("host", "add", "a", "--address", "local", "--socket", str(a.socket))
        cli.ok("host", "add", "b", "--address", "local", "--socket", str(b.socket))
        vm = unique("n")
        cli.ok("vm", "create", vm, *TINY, "--host", "a")   # no guest OS: never releases
        cli.ok("disk", "attach", vm, "--size", "8M")
        waiting = subprocess.Popen([PPEC, "disk", "detach", vm, "vdb", "--timeout", "60"],
                                   env=cli.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        wait_until(lambda: f"{vm}: asked the guest to release vdb" in a.log(),
                   what="the agent's unplug request")
        done = cli.run("agent", "sync", "-o", "json")
        assert done.returncode == 5, done.stderr   # partly done: b was not tried
        rows = {h["host"]: h for h in json.loads(done.stdout)["hosts"]}
        assert (rows["a"]["state"], rows["a"]["code"]) == ("failed", "BUSY")
        assert "waiting for its guest" in rows["a"]["error"]
        assert (rows["b"]["state"], rows["b"]["code"]) == ("not tried", "CANARY_FAILED")
        assert "not tried: canary a failed" in rows["b"]["error"]
        for site in (site_a, site_b):
            assert (site / "ppec" / "agent" / "retired.py").exists()   # untouched
        assert _ping(b)["version"] == "0.0.9"
    finally:
        if waiting is not None:
            waiting.kill()
        a.kill()
        b.kill()
