"""Wire the agent together: config, libvirt, ledger, recovery, then serve."""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from pathlib import Path

from filelock import Timeout

import ppec
from ppec.agent import config as agent_config
from ppec.agent import files, verify, watchdog
from ppec.agent.context import AgentContext, ensure_dirs
from ppec.agent.fault import checkpoint
from ppec.agent.handlers import Handlers
from ppec.agent.hypervisor import Hypervisor
from ppec.agent.ledger import Ledger
from ppec.agent.releases import Releases
from ppec.agent.server import AgentServer
from ppec.core.errors import PpecError
from ppec.core.signing import Approvers
from ppec.wire import bundle as pkgfiles

log = logging.getLogger("ppec.agent")


def serve(config_path: str | None, log_level: str = "INFO") -> int:
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s ppec-agent[%(process)d] %(levelname)s %(message)s")
    try:
        config = agent_config.load(Path(config_path) if config_path else None)
        ensure_dirs(config)
        handlers = Handlers(AgentContext(config, Hypervisor(config.libvirt_uri),
                                         Ledger(config.ledger_path)))
        approvers_path = Path(config.approvers_file)
        approvers = Approvers.load(approvers_path, require_root=True) \
            if approvers_path.exists() else None
        if approvers is not None:
            log.info("maker-checker enforced for %s (%d operators)",
                     ", ".join(sorted(approvers.rules)) or "nothing", len(approvers.operators))
        files.cleanup(pkgfiles.package_root())   # staging dirs an interrupted update left
        releases = settle_releases(handlers.ctx)
        server = AgentServer(config, handlers, approvers)
        server.bind()   # first: refuses to start when another agent already serves here
        # Recovery runs under the host lock: a second agent started by mistake must not
        # undo what the first is in the middle of doing.
        with server.host_lock:
            for line in handlers.recover():
                log.info("recovery: %s", line)
            log.info("domain type %s on %s", handlers.ctx.domain_type, config.libvirt_uri)
            handlers.ctx.disk_tuning  # noqa: B018 -- probed and said once, at start
    except PpecError as e:
        log.error("%s", e)
        return 1
    server.install_signal_handlers()
    server.start_drift_checks()
    verify.start(handlers.ctx, releases, config.verify_interval, threading.Event(),
                 lambda: server.host_lock)
    verify.start_images(handlers.drift.images, config.verify_interval, threading.Event())
    server.serve_forever()
    if server.restarting:   # not after a SIGTERM: then the next start runs the new files
        restart(server)
    return 0


def restart(server: AgentServer) -> None:
    """Become the updated agent: same PID, same arguments, the new files. Taking the host
    lock first lets any state change in progress finish; exec closes every descriptor
    (Python's are close-on-exec), so the lock and the old socket go with the old code."""
    if not server.wait_idle(server.config.lock_timeout):
        log.warning("requests still unanswered after %.0f s; restarting anyway",
                    server.config.lock_timeout)
    try:
        server.host_lock.acquire()
    except Timeout:   # a change stuck past lock_timeout: recovery at start settles it
        log.warning("host lock still held; restarting anyway")
    checkpoint(server.config, "restart")
    argv = sys.orig_argv[1:]
    after = server.ctx.after_restart
    if after and after.get("previous"):
        # The old code decides whether the new one is healthy: a child keeps it.
        with warnings.catch_warnings():   # fork with threads: the child only polls + execs
            warnings.simplefilter("ignore", DeprecationWarning)
            child = os.fork()
        if child == 0:
            watchdog.run(server.config, after, os.getppid(), argv)
        log.info("watchdog %d waits for release %s", child, after["digest"][:12])
    log.info("restarting on the updated files")
    logging.shutdown()
    os.execv(sys.executable, [sys.executable, *argv])


def settle_releases(ctx: AgentContext) -> Releases:
    """At start: the release pointer settled on what is installed, and the installed files
    verified against it (drift is an alert, never adopted)."""
    root = pkgfiles.package_root()
    releases = Releases(ctx.config.state_dir, root.name)
    pointer, _ = releases.reconcile(root, ppec.__version__)
    log.info("release %s (previous %s, %d failed)", pointer.current[:12] or "-",
             pointer.previous[:12] or "-", len(pointer.failed))
    ctx.failed_releases = [str(f.get("digest", "")) for f in pointer.failed]
    verify.check(ctx, releases)
    return releases
