"""The leader's machinery: one thread per job (three threads, whatever the fleet size),
each running its rounds on a timetable with jitter, never two rounds of one job at once."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence

from ppec.core.errors import PpecError
from ppec.operator.store import Store
from ppec.operator.store import fleetstate as fs
from ppec.service.jobs import Env, Job, Outcome, due
from ppec.service.log import Log
from ppec.service.notify import Dispatch
from ppec.service.pool import HostPool
from ppec.service.settings import Settings


class JobThread:
    """Runs ``job``'s rounds when triggered; a trigger while a round runs is refused."""

    def __init__(self, job: Job, settings: Settings, pool: HostPool, notify: Dispatch,
                 log: Log, stop: threading.Event) -> None:
        self.job, self.settings, self.pool, self.notify, self.log = \
            job, settings, pool, notify, log
        self.stop = stop
        self.last: Outcome | None = None
        self.error = ""
        self._trigger = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._loop, name=f"job:{job.name}",
                                        daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def trigger(self) -> bool:
        if self.busy:
            return False
        self._idle.clear()
        self._trigger.set()
        return True

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self._idle.wait(timeout)

    def _loop(self) -> None:
        store: Store | None = None
        try:
            while not self.stop.is_set():
                if not self._trigger.wait(0.2):
                    continue
                self._trigger.clear()
                try:
                    store = store or self.settings.open_store()
                    self._round(Env(store, self.pool, self.settings, self.log,
                                    self.notify, self.stop))
                except Exception as e:   # one bad round never ends the job
                    self.error = f"{type(e).__name__}: {e}" if not isinstance(
                        e, PpecError) else e.message
                    self.last = None
                    self.log.error("round_failed", job=self.job.name, error=self.error)
                finally:
                    self._idle.set()
        finally:
            if store is not None:
                store.close()

    def _round(self, env: Env) -> None:
        started = time.time()
        t0 = time.monotonic()
        hosts = env.store.hosts()
        if self.job.name == "snapshots":
            self.pool.retain({h.name for h in hosts})
        todo, skipped = due(fs.host_statuses(env.store), hosts, started,
                            ignore_backoff=self.settings.once)
        out = self.job.round(env, todo, started)
        out.skipped = skipped
        duration = time.monotonic() - t0
        self.error, self.last = "", out
        fs.record_job(env.store, self.job.name, started, duration, not out.failed,
                      hosts=out.asked, failed=len(out.failed),
                      error=", ".join(out.failed[:20]))
        self.log.info("round_done", job=self.job.name, duration_s=round(duration, 3),
                      hosts=out.asked, answered=out.answered, failed=len(out.failed),
                      backing_off=skipped, abandoned=out.abandoned or None,
                      stopped=self.stop.is_set() or None,
                      failed_hosts=out.failed[:20] or None)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class Jobs:
    """Every job, on the leader: the shared pool and notifiers, and the timetable."""

    def __init__(self, settings: Settings, log: Log, jobs: Sequence[Job]) -> None:
        self.settings, self.log = settings, log
        self.stop = threading.Event()
        self.pool = HostPool(settings.reach(), settings.workers, settings.stop_grace)
        self.notify = Dispatch(settings.notifiers, log, settings.notify_queue)
        self.threads = [JobThread(j, settings, self.pool, self.notify, log, self.stop)
                        for j in jobs]
        now = time.monotonic()
        self.next_due = {t.job.name: now for t in self.threads}

    def _interval(self, t: JobThread) -> float:
        base = t.job.interval(self.settings)
        j = self.settings.jitter
        return base * (1.0 + random.uniform(-j, j))   # spreading load, not secrets

    def tick(self) -> float:
        """Start every round that is due; seconds until the next one is."""
        now = time.monotonic()
        for t in self.threads:
            if now < self.next_due[t.job.name]:
                continue
            if not t.trigger():
                self.log.warning("round_skipped", job=t.job.name,
                                 reason="the previous round is still running")
            self.next_due[t.job.name] = now + self._interval(t)
        return max(0.0, min(self.next_due.values()) - time.monotonic())

    def run_once(self) -> list[JobThread]:
        """One round of every job, side by side; returns when all are done."""
        for t in self.threads:
            t.trigger()
        for t in self.threads:
            t.wait_idle()
        return list(self.threads)

    def close(self) -> None:
        """Stop: rounds take no new hosts; calls in flight get ``stop_grace`` seconds,
        then their connections are closed under them; notifiers stop last."""
        self.stop.set()
        deadline = time.monotonic() + self.settings.stop_grace
        for t in self.threads:
            t.wait_idle(max(0.0, deadline - time.monotonic()))
        self.pool.close()
        for t in self.threads:
            t.join(5.0)
        self.notify.close(self.settings.stop_grace)
