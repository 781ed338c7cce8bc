"""`ppec serve` runs the HTTP API beside its jobs: the pages show what the jobs stored,
health says this process leads, a stop closes the port; off loopback it needs a token."""

from __future__ import annotations

import json
import signal
import socket
import urllib.request
from pathlib import Path

from tests.realparts import Agent, Cli, wait_until
from tests.service.serving import Service

FAST = {"snapshot_interval": 0.5, "drift_interval": 5.0, "agent_check_interval": 5.0}


def get(port: int, path: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def test_serve_answers_http_with_what_its_jobs_store(cli: Cli, tmp_path: Path) -> None:
    agent = Agent(tmp_path / "agent", host="t1").start()
    service = Service(cli, tmp_path / "serve", FAST)
    try:
        assert cli.run("host", "add", "local", "--address", "local", "--socket",
                       str(agent.socket)).returncode == 0
        service.start()
        port = service.http_port()
        service.wait_rounds(2)
        page = get(port, "/api/v1/hosts")
        assert [h["name"] for h in page["hosts"]] == ["local"]
        wait_until(lambda: get(port, "/api/v1/health")["leader"] is True, 30,
                   "health to say this service leads")
        assert get(port, "/api/v1/health")["hosts"]["without_snapshot"] == 0
        assert service.signal(signal.SIGTERM) == 0
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0   # the port is closed
    finally:
        service.stop()
        agent.kill()


def test_serve_off_loopback_without_a_token_refuses_to_start(cli: Cli, tmp_path: Path
                                                              ) -> None:
    service = Service(cli, tmp_path / "serve", FAST)
    service.start("--listen", "0.0.0.0:0")
    assert service.proc is not None
    assert service.proc.wait(timeout=60) == 2
    assert "token" in service.log_path.read_text()
