"""The agent's releases on the host: kept by digest, rolled back to, verified, refused.

Agents here run on libvirt's test driver from a copy of ppec (PYTHONPATH), so updates
rewrite that copy; the operator side runs from this checkout or from another copy."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

import ppec
from ppec.agent.config import UPDATE_STEPS
from ppec.wire import bundle as files
from tests.agent import syncparts as sp
from tests.agent.test_agent_sync import old_copy
from tests.realparts import PPEC, Agent, Cli, wait_until


def _agent(root: Path, site: Path, **extra: object) -> Agent:
    return Agent(root / "agent", host="t1", env={"PYTHONPATH": str(site)},
                 extra=dict(extra)).start()


def test_releases_are_kept_and_rollback_goes_back_and_forth(cli: Cli, tmp_path: Path) -> None:
    site = old_copy(tmp_path)
    agent = _agent(tmp_path, site)
    try:
        cli.ok("host", "add", "t1", "--address", "local", "--socket", str(agent.socket))
        old = sp.manifest(agent)
        assert old["release"] == {"current": old["digest"], "previous": "", "failed": []}
        none = cli.run("agent", "rollback", "-o", "json")
        assert none.returncode == 1
        assert json.loads(none.stdout)["hosts"][0]["code"] == "NO_PREVIOUS"
        cli.ok("agent", "sync")
        new = sp.manifest(agent)
        assert new["version"] == ppec.__version__ and new["pid"] == old["pid"]
        assert new["release"]["current"] == new["digest"]
        assert new["release"]["previous"] == old["digest"]
        # Both releases on the host, each complete, read with plain json + sha256.
        kept = sp.accepted(agent)
        assert kept == {old["digest"]: old["files"], new["digest"]: new["files"]}
        for digest, want in kept.items():
            assert files.manifest(sp.releases_dir(agent) / digest / "ppec") == want

        back = json.loads(cli.ok("agent", "rollback", "-o", "json").stdout)["hosts"]
        assert [(h["state"], h["version"], h["to"]) for h in back] == [
            ("rolled back", ppec.__version__, "0.0.9")]
        now = sp.manifest(agent)
        assert (now["digest"], now["pid"]) == (old["digest"], old["pid"])   # exec in place
        assert files.manifest(site / "ppec") == old["files"]
        assert now["release"]["previous"] == new["digest"]
        # And forward again: the release replaced is the one to go back to.
        cli.ok("agent", "rollback")
        assert sp.manifest(agent)["digest"] == new["digest"]
        assert files.manifest(site / "ppec") == new["files"]
        assert sp.pointer(agent)["current"] == new["digest"]
    finally:
        sp.stop(agent)


@pytest.mark.parametrize("how", ["exits", "hangs"])
def test_a_release_that_cannot_start_is_rolled_back_by_the_old_code(
        cli: Cli, tmp_path: Path, how: str) -> None:
    site = old_copy(tmp_path)
    # Default health_timeout (20 s) for one that exits; a short one for one that hangs.
    agent = _agent(tmp_path, site, **({"health_timeout": 4} if how == "hangs" else {}))
    try:
        cli.ok("host", "add", "t1", "--address", "local", "--socket", str(agent.socket))
        old = sp.manifest(agent)
        bad_site = sp.broken_copy(tmp_path / "bad", how)
        bad = files.digest("0.2.0", files.manifest(bad_site / "ppec"))
        cli.env["PYTHONPATH"] = str(bad_site)   # the operator ships the bad release
        started = time.monotonic()
        done = cli.run("agent", "sync", "-o", "json")
        took = time.monotonic() - started
        assert done.returncode == 1, (done.stdout, done.stderr)
        row = json.loads(done.stdout)["hosts"][0]
        assert (row["state"], row["code"]) == ("failed", "ROLLED_BACK"), row
        assert took < 30, took   # the bound, not a benchmark
        now = sp.wait_answer(agent)
        assert now["digest"] == old["digest"] and now["version"] == "0.0.9"
        assert files.manifest(site / "ppec") == old["files"]
        assert [f["digest"] for f in now["release"]["failed"]] == [bad]
        assert now["release"]["current"] == old["digest"]
        assert now["pid"] != old["pid"]   # the watchdog became the agent
        assert "failed its health check" in agent.log()
        # `ppec agent status` (this checkout again) shows the host serving.
        cli.env.pop("PYTHONPATH")
        status = json.loads(cli.ok("agent", "status", "-o", "json").stdout)["agents"]
        assert (status[0]["version"], status[0]["digest"]) == ("0.0.9", old["digest"])
        assert status[0]["failed_releases"] == [bad]
    finally:
        sp.stop(agent)


def test_supervised_the_watchdog_restores_and_the_service_manager_restarts(
        cli: Cli, tmp_path: Path) -> None:
    """``supervised = true``: the watchdog only puts the old files back; a stand-in for
    systemd's Restart=always (RestartSec=3) starts the agent again."""
    import threading
    site = old_copy(tmp_path)
    agent = _agent(tmp_path, site, supervised=True)
    done_watching = threading.Event()

    def manager() -> None:
        while not done_watching.is_set():
            if agent.proc is not None and agent.proc.poll() is not None:
                time.sleep(3)
                # Still the bad release: it exits again; try again, as systemd would.
                with contextlib.suppress(AssertionError):
                    agent.start()
            time.sleep(0.1)
    watcher = threading.Thread(target=manager, daemon=True)
    try:
        cli.ok("host", "add", "t1", "--address", "local", "--socket", str(agent.socket))
        old = sp.manifest(agent)
        watcher.start()
        cli.env["PYTHONPATH"] = str(sp.broken_copy(tmp_path / "bad"))
        done = cli.run("agent", "sync", "-o", "json")
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert json.loads(done.stdout)["hosts"][0]["code"] == "ROLLED_BACK"
        now = sp.wait_answer(agent)
        assert now["digest"] == old["digest"]
        assert agent.proc is not None and now["pid"] == agent.proc.pid   # the manager's
        assert "the service manager restarts the agent" in agent.log()
        assert files.manifest(site / "ppec") == old["files"]
    finally:
        done_watching.set()
        sp.stop(agent)


def test_a_downgrade_is_refused_unless_asked(cli: Cli, tmp_path: Path) -> None:
    site = sp.copy_as(tmp_path / "host", ppec.__version__)
    agent = _agent(tmp_path, site)
    try:
        cli.ok("host", "add", "t1", "--address", "local", "--socket", str(agent.socket))
        before = files.manifest(site / "ppec")
        cli.env["PYTHONPATH"] = str(old_copy(tmp_path / "op"))   # the operator has 0.0.9
        done = cli.run("agent", "sync", "-o", "json")
        assert done.returncode == 1
        row = json.loads(done.stdout)["hosts"][0]
        assert row["code"] == "DOWNGRADE" and "older than the running" in row["error"]
        assert files.manifest(site / "ppec") == before
        assert sp.manifest(agent)["version"] == ppec.__version__
        done = cli.run("agent", "sync", "--allow-downgrade", "-o", "json")
        assert done.returncode == 0, done.stderr
        assert sp.manifest(agent)["version"] == "0.0.9"
    finally:
        sp.stop(agent)


def _bomb() -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("__init__.py")
        info.size = files.MAX_PACKAGE_BYTES + 1
        tar.addfile(info, io.BytesIO(b"\0" * info.size))
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("case", ["long", "bomb"])
def test_an_oversized_bundle_is_refused(tmp_path: Path, case: str) -> None:
    site = old_copy(tmp_path)
    agent = _agent(tmp_path, site)
    try:
        before = files.manifest(site / "ppec")
        want = {**before, "__init__.py": "0" * 64}
        bundle = "A" * (files.MAX_BUNDLE_CHARS + 4) if case == "long" else _bomb()
        reply = sp.call(agent.socket, "agent.update", {
            "version": "9.9", "manifest": want, "bundle": bundle,
            "digest": files.digest("9.9", want)})
        assert reply["ok"] is False and reply["error"]["code"] == "BUNDLE_TOO_LARGE", reply
        assert files.manifest(site / "ppec") == before
        assert sp.manifest(agent)["version"] == "0.0.9"
    finally:
        sp.stop(agent)


def test_a_file_edited_on_the_host_is_an_alert_within_one_interval(
        cli: Cli, tmp_path: Path) -> None:
    site = old_copy(tmp_path)
    agent = _agent(tmp_path, site, verify_interval=1)
    try:
        cli.ok("host", "add", "t1", "--address", "local", "--socket", str(agent.socket))
        assert cli.run("alerts").returncode == 0
        edited = site / "ppec" / "agent" / "vmops.py"
        original = edited.read_text()
        edited.write_text(original + "\n# edited by hand\n")
        # The agent notices by itself (its log), within an interval or so.
        wait_until(lambda: "AGENT_FILES_CHANGED" in agent.log(), timeout=10,
                   what="the agent's own verification")
        assert "agent/vmops.py" in agent.log()
        seen = cli.run("alerts", "-o", "json")
        assert seen.returncode == 10, seen.stderr
        rows = json.loads(seen.stdout)["alerts"]
        assert [(a["code"], a["object"]) for a in rows] == [
            ("AGENT_FILES_CHANGED", "ppec-agent")]
        assert "agent/vmops.py" in rows[0]["detail"]
        # A restarted agent says so at start too; it never adopts the edit as a release.
        agent.kill()
        agent.start()
        assert agent.log().count("AGENT_FILES_CHANGED") >= 2
        assert cli.run("alerts").returncode == 10
        assert len(sp.accepted(agent)) == 1
        # Put back on disk, the process still runs the edit it started with: still drift,
        # named as running; a restart on the accepted files clears it.
        edited.write_text(original)
        seen = cli.run("alerts", "-o", "json")
        assert seen.returncode == 10
        assert "running:agent/vmops.py" in json.loads(seen.stdout)["alerts"][0]["detail"]
        agent.kill()
        agent.start()
        assert cli.run("alerts").returncode == 0
    finally:
        sp.stop(agent)


@pytest.mark.parametrize("step", UPDATE_STEPS)
def test_kill_9_at_each_step_leaves_one_accepted_release(
        cli: Cli, tmp_path: Path, step: str) -> None:
    site = old_copy(tmp_path)
    agent = _agent(tmp_path, site, fault_stop_at=step)
    syncing = None
    try:
        cli.ok("host", "add", "t1", "--address", "local", "--socket", str(agent.socket))
        old = sp.manifest(agent)
        syncing = subprocess.Popen([PPEC, "agent", "sync"], env=cli.env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert agent.proc is not None
        pid = agent.proc.pid
        wait_until(lambda: sp.stopped(pid), timeout=60,
                   what=f"the agent stopped at {step}")
        assert f"stopping at step {step}" in agent.log()
        agent.kill()            # kill -9, right there
        syncing.kill()
        agent.extra.pop("fault_stop_at")
        agent.start()
        now = sp.manifest(agent)
        installed = files.manifest(site / "ppec")
        kept = sp.accepted(agent)
        assert [d for d, m in kept.items() if m == installed] == [now["digest"]]
        assert sp.pointer(agent)["current"] == now["digest"]
        assert now["files"] == installed
        want_new = step in ("exchanged", "recorded", "restart")
        assert (now["version"] == ppec.__version__) is want_new, (step, now["version"])
        assert now["digest"] != old["digest"] or not want_new
        assert not list(site.glob(".ppec-update-*"))
        assert not list(sp.releases_dir(agent).glob(".tmp-*"))
        assert cli.run("alerts").returncode == 0
        # And the next sync finishes the job.
        cli.ok("agent", "sync")
        assert files.manifest(site / "ppec") == files.manifest(files.package_root())
    finally:
        if syncing is not None:
            syncing.kill()
        sp.stop(agent)


def test_under_policy_a_rollback_waits_for_a_second_person(cli: Cli, tmp_path: Path) -> None:
    from tests.policy import as_, install_policy, make_people
    people = make_people(tmp_path)
    approvers = install_policy(cli, tmp_path, people, '[approval.agent]\noperations = '
                                                      '["rollback"]\napprovers = ["sre"]\n')
    site = old_copy(tmp_path)
    agent = _agent(tmp_path, site, approvers_file=str(approvers))
    try:
        cli.ok("host", "add", "t1", "--address", "local", "--socket", str(agent.socket))
        old = sp.manifest(agent)
        cli.ok("agent", "sync")
        new = sp.manifest(agent)
        direct = sp.call(agent.socket, "agent.rollback",
                         {"to": old["digest"], "current": new["digest"]})
        assert direct["ok"] is False
        assert "agent.rollback needs an approved request" in direct["error"]["message"]
        held = as_(cli, people["alice"], "agent", "rollback", "-o", "json")
        assert held.returncode == 4, held.stderr  # type: ignore[attr-defined]
        request = json.loads(held.stdout)  # type: ignore[attr-defined]
        assert request["operation"] == "agent.rollback"
        assert request["payload"]["params"]["to"] == old["digest"]
        assert sp.manifest(agent)["digest"] == new["digest"]
        done = as_(cli, people["bob"], "request", "approve", str(request["id"]), "-o", "json")
        assert done.returncode == 0, done.stderr  # type: ignore[attr-defined]
        assert json.loads(done.stdout)["result"]["state"] == "rolled back"  # type: ignore[attr-defined]
        assert sp.manifest(agent)["digest"] == old["digest"]
        assert files.manifest(site / "ppec") == old["files"]
    finally:
        sp.stop(agent)
