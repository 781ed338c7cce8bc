"""The service's main loop: hold the leader lock (or wait for it), run the jobs while
holding it, stop cleanly on SIGTERM/SIGINT.

To run the jobs beside something else (the HTTP server), start that, then call
``run(settings, stop)`` in this thread; set ``stop`` to end both.
"""

from __future__ import annotations

import re
import signal
import threading
from types import FrameType
from typing import Any

from ppec.core.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, PpecError
from ppec.operator.store import Store
from ppec.service.jobs import Job, alerting_hosts
from ppec.service.jobs.agentfiles import AgentFiles
from ppec.service.jobs.drift import Drift
from ppec.service.jobs.images import SOURCE as IMAGES_SOURCE
from ppec.service.jobs.images import Images
from ppec.service.jobs.snapshots import Snapshots
from ppec.service.leader import Leader, for_store
from ppec.service.log import Log
from ppec.service.runner import Jobs, JobThread
from ppec.service.settings import Settings


def default_jobs(settings: Settings | None = None, store: Store | None = None) -> list[Job]:
    """The three fleet jobs, and the images job when ``[images] everywhere`` names images
    (or, with an empty list, while alerts it opened are open: its round resolves them)."""
    jobs: list[Job] = [Snapshots(), Drift(), AgentFiles()]
    wanted = settings.images_everywhere if settings is not None else ()
    if wanted or (store is not None and alerting_hosts(store, IMAGES_SOURCE)):
        jobs.append(Images(wanted))
    return jobs


def run(settings: Settings, stop: threading.Event, log: Log | None = None,
        jobs: list[Job] | None = None, leading: threading.Event | None = None) -> int:
    """Run the periodic jobs (on the leader only) until ``stop`` is set; with
    ``settings.once``, one round of each, then return. Returns the exit code."""
    log = log or Log()
    store = settings.open_store()   # migrate now, and fail at start if the store is unusable
    try:
        jobs = jobs or default_jobs(settings, store)
    finally:
        store.close()
    leader = for_store(settings.db)
    intervals = {"snapshots": settings.snapshot_interval, "drift": settings.drift_interval,
                 "agent_files": settings.agent_check_interval}
    if any(j.name == "images" for j in jobs):
        intervals["images"] = settings.images_interval
    log.info("started", db=_redact(settings.db), listen=settings.listen,
             once=settings.once, workers=settings.workers, intervals=intervals,
             images_everywhere=list(settings.images_everywhere) or None,
             notifiers=[n.name for n in settings.notifiers])
    try:
        if settings.once:
            return _once(settings, log, leader, jobs)
        _lead_or_follow(settings, log, leader, stop, jobs, leading or threading.Event())
        return EXIT_OK
    finally:
        leader.release()
        log.info("stopped", leader_lock="released")


def _lead_or_follow(settings: Settings, log: Log, leader: Leader, stop: threading.Event,
                    jobs: list[Job], leading: threading.Event) -> None:
    """Lead (run the jobs) while holding the lock, else retry it; ``leading`` says which,
    for the HTTP side's health answer."""
    running: Jobs | None = None
    said_follower = False
    try:
        while not stop.is_set():
            if running is None:
                try:
                    got = leader.try_acquire()
                except PpecError as e:
                    log.error("leader_lock_failed", error=e.message)
                    got = False
                if got:
                    log.info("leader", lock=leader.where)
                    said_follower = False
                    running = Jobs(settings, log, jobs)
                    leading.set()
                elif not said_follower:
                    log.info("follower", lock=leader.where, retry_s=settings.retry_every)
                    said_follower = True
            elif not leader.still_held():
                log.error("leader_lost", lock=leader.where)
                leading.clear()
                running.close()
                running = None
                continue
            wait = settings.retry_every if running is None else min(running.tick(), 1.0)
            stop.wait(wait)
    finally:
        leading.clear()
        if running is not None:
            log.info("stopping", grace_s=settings.stop_grace)
            running.close()


def _once(settings: Settings, log: Log, leader: Leader, jobs: list[Job]) -> int:
    if not leader.try_acquire():
        raise PpecError(f"another ppec serve leads on this store ({leader.where}); it "
                        f"already runs the jobs", code="NOT_LEADER")
    running = Jobs(settings, log, jobs)
    try:
        done = running.run_once()
    finally:
        running.close()
    return once_exit_code(done)


def once_exit_code(done: list[JobThread]) -> int:
    """0 when every host answered every job, 5 when some failed, 1 when all did (or a
    round could not run at all)."""
    if any(t.last is None for t in done):
        return EXIT_FAILED
    asked = max((t.last.asked for t in done if t.last), default=0)
    failed = {h for t in done if t.last for h in t.last.failed}
    if not failed:
        return EXIT_OK
    return EXIT_FAILED if len(failed) >= asked else EXIT_PARTIAL


def _redact(url: str) -> str:
    """The store URL without its password, for the log."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def serve(settings: Settings, log: Log | None = None) -> int:
    """``ppec serve``: the HTTP API, metrics and UI (not with --once) beside ``run``;
    SIGTERM and SIGINT set the stop event, then HTTP stops after the jobs."""
    log = log or Log()
    stop = threading.Event()
    leading = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    http = None if settings.once else _start_http(settings, log, leading)
    try:
        return run(settings, stop, log, leading=leading)
    finally:
        if http is not None:
            http.stop()


def _start_http(settings: Settings, log: Log, leading: threading.Event) -> Any:
    # Here, not at the top: fastapi and uvicorn are paid only by a service that serves.
    from ppec.service.http import listen, server
    from ppec.service.http.app import create_app
    host, port, token = listen.resolve(settings.listen, str(settings.token_file)
                                       if settings.token_file else None)
    # A snapshot is fresh for the pages while it is at most two rounds old.
    app = create_app(settings.db, token=token, fresh_for=2 * settings.snapshot_interval,
                     leader=leading.is_set, store_connections=settings.store_connections)
    handle = server.start(app, host, port)
    log.info("http", listen=f"{host}:{handle.port}", mode=listen.mode_line(host, handle.port,
                                                                          token))
    return handle
