"""Wire the agent together: config, libvirt, ledger, recovery, then serve."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from filelock import Timeout

from ppec.agent import config as agent_config
from ppec.agent import files
from ppec.agent.context import AgentContext, ensure_dirs
from ppec.agent.handlers import Handlers
from ppec.agent.hypervisor import Hypervisor
from ppec.agent.ledger import Ledger
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
        server = AgentServer(config, handlers, approvers)
        server.bind()   # first: refuses to start when another agent already serves here
        # Recovery runs under the host lock: a second agent started by mistake must not
        # undo what the first is in the middle of doing.
        with server.host_lock:
            for line in handlers.recover():
                log.info("recovery: %s", line)
            log.info("domain type %s on %s", handlers.ctx.domain_type, config.libvirt_uri)
    except PpecError as e:
        log.error("%s", e)
        return 1
    server.install_signal_handlers()
    server.start_drift_checks()
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
    log.info("restarting on the updated files")
    logging.shutdown()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
