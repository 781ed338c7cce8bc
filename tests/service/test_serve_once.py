"""`ppec serve --once` exit codes and agent-file alerts, bad `[serve]` config, and a clean
SIGTERM that hands the leader lock to the next service at once."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import ppec
from ppec.wire import bundle as files
from tests.agent.test_agent_sync import old_copy
from tests.realparts import TEST_NODE_URI, Cli, make_key, wait_until
from tests.service.serving import Service, add_hosts, make_fleet, statuses, stop_fleet


def altered_copy(where: Path) -> Path:
    """This very version of ppec with one agent file edited on the host."""
    pkg = where / "site" / "ppec"
    shutil.copytree(files.package_root(), pkg, ignore=shutil.ignore_patterns("__pycache__"))
    drift = pkg / "agent" / "drift.py"
    drift.write_text(drift.read_text() + "\n# edited by hand on the host\n")
    return pkg.parent


def store_alerts(db: Path) -> set[tuple[str, str, str, bool]]:
    import sqlite3
    with sqlite3.connect(db) as c:
        return {(h, s, code, r is None) for h, s, code, r in c.execute(
            "SELECT host, source, code, resolved_at FROM fleet_alerts")}


def test_once_exit_codes_and_agent_file_alerts(cli: Cli, tmp_path: Path,
                                               sshd_ready: None) -> None:
    key = tmp_path / "operator_ed25519"
    env = {"h2": {"PYTHONPATH": str(old_copy(tmp_path / "old"))},
           "h3": {"PYTHONPATH": str(altered_copy(tmp_path / "altered"))}}
    hosts = make_fleet(tmp_path / "fleet", 3, TEST_NODE_URI, make_key(key), env=env)
    sink = tmp_path / "notified.jsonl"
    service = Service(cli, tmp_path / "serve", {"notifier": [
        {"type": "command", "argv": ["sh", "-c", f"cat >> {sink}; echo >> {sink}"]}]})
    try:
        add_hosts(cli, hosts, key)
        done = service.once()
        assert done.returncode == 0, done.stderr
        assert store_alerts(cli.db) == {("h2", "agent", "AGENT_OUTDATED", True),
                                        ("h3", "agent", "AGENT_FILES_CHANGED", True)}
        sent = [json.loads(line) for line in sink.read_text().splitlines()]
        assert sorted((e["host"], e["code"], e["object"], e["state"]) for e in sent) == [
            ("h2", "AGENT_OUTDATED", "ppec-agent", "opened"),
            ("h3", "AGENT_FILES_CHANGED", "ppec-agent", "opened")]
        h3 = next(e for e in sent if e["host"] == "h3")
        assert "agent/drift.py" in h3["detail"] and h3["first_seen"] and \
            h3["resolved_at"] is None
        assert f"this ppec is {ppec.__version__}" in \
            next(e for e in sent if e["host"] == "h2")["detail"]
        # Every line of stderr is one JSON object with time, level and event.
        records = [json.loads(line) for line in done.stderr.splitlines()]
        assert {"time", "level", "event"} <= set(records[0])
        assert {r["job"] for r in records if r["event"] == "round_done"} == \
            {"snapshots", "drift", "agent_files"}

        hosts[0].down()
        done = service.once()
        assert done.returncode == 5, done.stderr
        assert statuses(cli.db)["h1"][0] == "failed"
        assert statuses(cli.db)["h2"][0] == "ok"
        for h in hosts[1:]:
            h.down()
        assert service.once().returncode == 1
        hosts[0].up()
        assert service.once().returncode == 5
        # Alerts of hosts that did not answer stay open; nothing is sent twice.
        assert len(sink.read_text().splitlines()) == 2
    finally:
        stop_fleet(hosts)


def test_bad_serve_config_exits_2_with_one_clear_line(cli: Cli, tmp_path: Path) -> None:
    cases = [({"drift_interval": "soon"}, "[serve] drift_interval must be a number"),
             ({"workers": 0}, "[serve] workers must be an integer from 1 to 1024"),
             ({"snapshot_intervl": 5}, "[serve]: unknown key(s) snapshot_intervl"),
             ({"notifier": [{"type": "pager"}]}, 'type must be "webhook" or "command"'),
             ({"notifier": [{"type": "webhook", "url": "ftp://x"}]}, "url must be an http"),
             ({"notifier": [{"type": "command", "argv": "notify-send"}]},
              "argv must be a non-empty list of strings")]
    for i, (table, message) in enumerate(cases):
        done = Service(cli, tmp_path / f"s{i}", table).once()
        assert done.returncode == 2, (table, done.stderr)
        assert len(done.stderr.splitlines()) == 1 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    done = Service(cli, tmp_path / "listen", {}).once("--listen", "nowhere")
    assert done.returncode == 2 and "give HOST:PORT" in done.stderr


def test_sigterm_exits_0_and_releases_the_leader_lock(cli: Cli, tmp_path: Path) -> None:
    fast = {"snapshot_interval": 0.5, "drift_interval": 0.5, "agent_check_interval": 0.5}
    first = Service(cli, tmp_path / "serve", fast, tag="A").start()
    second = Service(cli, tmp_path / "serve", fast, tag="B")
    try:
        wait_until(lambda: first.events("leader"), 30, "the first service leads")
        first.wait_rounds(2)
        second.start()
        wait_until(lambda: second.events("follower"), 30, "the second one follows")
        busy = Service(cli, tmp_path / "serve", {}, tag="C").once()
        assert busy.returncode == 1 and "another ppec serve leads" in busy.stderr
        assert first.signal(signal.SIGTERM) == 0
        assert first.events()[-1]["event"] == "stopped"
        assert first.events()[-1]["leader_lock"] == "released"
        wait_until(lambda: second.events("leader"), 5, "the second takes over")
        assert second.signal(signal.SIGINT) == 0
        assert Service(cli, tmp_path / "serve", {}, tag="C").once().returncode == 0
    finally:
        first.stop()
        second.stop()


def test_sigterm_abandons_a_round_stuck_on_a_hung_agent(cli: Cli, tmp_path: Path,
                                                       sshd_ready: None) -> None:
    key = tmp_path / "operator_ed25519"
    hosts = make_fleet(tmp_path / "fleet", 1, TEST_NODE_URI, make_key(key))
    service = Service(cli, tmp_path / "serve", {
        "snapshot_interval": 0.5, "drift_interval": 0.5, "agent_check_interval": 0.5,
        "stop_grace": 1.0})
    agent = hosts[0].agent.proc
    assert agent is not None
    try:
        add_hosts(cli, hosts, key)
        service.start()
        service.wait_rounds(2)
        def skipped() -> int:
            return sum(1 for e in service.events("round_skipped") if e["job"] == "snapshots")
        before = skipped()
        agent.send_signal(signal.SIGSTOP)   # answers nothing, holds every connection open
        wait_until(lambda: skipped() > before, 30, "a snapshot round stuck on the hung agent")
        # Snapshot calls wait 30 s and drift checks 600 s for a reply: a clean stop
        # abandons them after stop_grace instead.
        assert service.proc is not None
        service.proc.send_signal(signal.SIGTERM)
        assert service.proc.wait(timeout=25) == 0
        events = [e["event"] for e in service.events()]
        assert events[-1] == "stopped" and "stopping" in events
        # Abandoned, not failed: the service's own stop is not the host's fault.
        assert statuses(cli.db)["h1"][0] == "ok"
        assert not service.events("host_failed")
    finally:
        agent.send_signal(signal.SIGCONT)
        service.stop()
        stop_fleet(hosts)
