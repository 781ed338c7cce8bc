"""Tell people when an alert opens or resolves: webhooks (HTTP POST of JSON) and commands
(the JSON on stdin).

Each notifier has its own queue and thread, so a receiver that hangs or refuses delays
only its own deliveries, never the jobs (they only enqueue) nor the other notifiers.
A full queue drops the newest event and logs it: memory stays bounded when a receiver is
gone for good.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from ppec.operator.store.fleetstate import Alert
from ppec.service.log import Log
from ppec.service.settings import NotifierSpec


def event(alert: Alert, state: str) -> dict[str, Any]:
    """The JSON a notifier delivers; ``state`` is opened or resolved."""
    return {"host": alert.host, "source": alert.source, "code": alert.code,
            "object": alert.object, "detail": alert.detail, "state": state,
            "first_seen": alert.first_seen, "last_seen": alert.last_seen,
            "resolved_at": alert.resolved_at, "alert_id": alert.id}


class DeliveryError(Exception):
    pass


def _post(spec: NotifierSpec, body: bytes) -> None:
    request = urllib.request.Request(spec.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "ppec-serve"})
    try:
        with urllib.request.urlopen(request, timeout=spec.timeout) as reply:
            reply.read(65536)
    except urllib.error.HTTPError as e:
        raise DeliveryError(f"HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DeliveryError(str(reason) or type(e).__name__) from None


def _run(spec: NotifierSpec, body: bytes) -> None:
    try:
        done = subprocess.run(list(spec.argv), input=body, capture_output=True,
                              timeout=spec.timeout, check=False)
    except subprocess.TimeoutExpired:
        raise DeliveryError(f"no exit within {spec.timeout:g} s (killed)") from None
    except OSError as e:
        raise DeliveryError(f"cannot run {spec.argv[0]}: {e.strerror or e}") from None
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip()[-300:]
        raise DeliveryError(f"exit {done.returncode}: {tail}")


class Notifier:
    """One destination: a queue and the thread that drains it, with retries."""

    def __init__(self, spec: NotifierSpec, log: Log, stop: threading.Event,
                 capacity: int, backoff_base: float = 1.0, backoff_cap: float = 30.0) -> None:
        self.spec = spec
        self.log = log
        self.stop = stop
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=capacity)
        self.delivered = 0
        self.dropped = 0
        self._base, self._cap = backoff_base, backoff_cap
        self._thread = threading.Thread(target=self._loop, name=f"notify:{spec.type}",
                                        daemon=True)
        self._thread.start()

    def put(self, item: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            self.log.warning("notify_dropped", notifier=self.spec.name,
                             host=item["host"], code=item["code"], object=item["object"],
                             reason="queue full")

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                item = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._deliver(item)
            finally:
                self.queue.task_done()

    def _deliver(self, item: dict[str, Any]) -> None:
        body = json.dumps(item).encode()
        send = _post if self.spec.type == "webhook" else _run
        for attempt in range(self.spec.retries + 1):
            try:
                send(self.spec, body)
            except DeliveryError as e:
                wait = min(self._cap, self._base * 2.0 ** attempt)
                last = attempt == self.spec.retries
                self.log.warning("notify_failed", notifier=self.spec.name,
                                 host=item["host"], code=item["code"],
                                 object=item["object"], state=item["state"],
                                 attempt=attempt + 1, error=str(e),
                                 retry_in=None if last else wait)
                if last or self.stop.wait(wait):
                    return
                continue
            self.delivered += 1
            self.log.info("notified", notifier=self.spec.name, host=item["host"],
                          code=item["code"], object=item["object"], state=item["state"])
            return

    def join(self, timeout: float) -> None:
        with contextlib.suppress(RuntimeError):
            self._thread.join(timeout)


class Dispatch:
    """Every configured notifier; ``send`` never blocks the caller."""

    def __init__(self, specs: Sequence[NotifierSpec], log: Log, capacity: int = 10000,
                 backoff_base: float = 1.0) -> None:
        self._stop = threading.Event()
        self.notifiers = [Notifier(s, log, self._stop, capacity, backoff_base)
                          for s in specs]

    def send(self, opened: Sequence[Alert], resolved: Sequence[Alert]) -> None:
        for alert, state in [*((a, "opened") for a in opened),
                             *((a, "resolved") for a in resolved)]:
            item = event(alert, state)
            for n in self.notifiers:
                n.put(item)

    def close(self, drain: float = 5.0) -> None:
        """Deliver what is queued for up to ``drain`` seconds, then stop; what is left is
        abandoned (the alerts stay in the store), and logged."""
        deadline = time.monotonic() + drain
        while any(n.queue.unfinished_tasks for n in self.notifiers) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        for n in self.notifiers:
            n.join(max(0.1, deadline - time.monotonic()))
            if n.queue.unfinished_tasks:
                n.log.warning("notify_abandoned", notifier=n.spec.name,
                              pending=n.queue.unfinished_tasks)
