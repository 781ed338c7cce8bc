"""Notifiers against real receivers: a webhook that fails twice is retried with back-off
and delivered once; a command gets the JSON on stdin and is killed at its timeout; a full
queue drops (and logs) instead of blocking the job that sends."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ppec.operator.store.fleetstate import Alert
from ppec.service.log import Log
from ppec.service.notify import Dispatch
from ppec.service.settings import NotifierSpec
from tests.realparts import wait_until
from tests.service.serving import Receiver

ALERT = Alert(7, "bm-01", "drift", "DOMAIN_MISSING", "web-1", "gone from libvirt",
              100.0, 160.0, None)


def records(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def flaky_server(fail: int) -> tuple[ThreadingHTTPServer, list[bytes]]:
    bodies: list[bytes] = []
    seen = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen[0] += 1
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if seen[0] <= fail:
                self.send_error(500, "not yet")
                return
            bodies.append(body)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, bodies


def test_webhook_retried_with_backoff_then_delivered_once() -> None:
    server, bodies = flaky_server(fail=2)
    out = io.StringIO()
    url = f"http://127.0.0.1:{server.server_address[1]}/x"
    dispatch = Dispatch([NotifierSpec("webhook", url=url, timeout=5, retries=3)], Log(out),
                        backoff_base=0.05)
    try:
        dispatch.send([ALERT], [])
        wait_until(lambda: bodies, 10, "the delivery")
        dispatch.close()
        assert json.loads(bodies[0]) == {
            "host": "bm-01", "source": "drift", "code": "DOMAIN_MISSING", "object": "web-1",
            "detail": "gone from libvirt", "state": "opened", "first_seen": 100.0,
            "last_seen": 160.0, "resolved_at": None, "alert_id": 7}
        assert len(bodies) == 1
        failed = [r for r in records(out) if r["event"] == "notify_failed"]
        assert [r["attempt"] for r in failed] == [1, 2]
        assert all("HTTP 500" in r["error"] for r in failed)
        assert [r["retry_in"] for r in failed] == [0.05, 0.1]
    finally:
        server.shutdown()
        server.server_close()


def test_command_gets_json_on_stdin_and_is_killed_at_its_timeout(tmp_path: Path) -> None:
    sink = tmp_path / "got.json"
    out = io.StringIO()
    resolved = Alert(**{**ALERT.as_dict(), "resolved_at": 200.0})
    dispatch = Dispatch([NotifierSpec("command", argv=("sh", "-c", f"cat > {sink}")),
                         NotifierSpec("command", argv=("sleep", "30"), timeout=0.3,
                                      retries=0)], Log(out))
    dispatch.send([], [resolved])
    dispatch.close(drain=10)
    got = json.loads(sink.read_text())
    assert (got["state"], got["resolved_at"], got["object"]) == ("resolved", 200.0, "web-1")
    killed = [r for r in records(out) if r["event"] == "notify_failed"]
    assert len(killed) == 1 and "no exit within 0.3 s (killed)" in killed[0]["error"]


def test_a_full_queue_drops_instead_of_blocking_the_sender() -> None:
    hanging = Receiver(hang=True)
    out = io.StringIO()
    dispatch = Dispatch([NotifierSpec("webhook", url=hanging.url, timeout=60, retries=0)],
                        Log(out), capacity=2)
    try:
        for _ in range(10):   # a blocking send would hang here, behind the receiver
            dispatch.send([ALERT], [])
        wait_until(lambda: hanging.hits == 1, 10, "the first delivery under way")
        dropped = [r for r in records(out) if r["event"] == "notify_dropped"]
        assert len(dropped) >= 7 and dropped[0]["reason"] == "queue full"
    finally:
        hanging.close()
        dispatch.close(drain=0)
