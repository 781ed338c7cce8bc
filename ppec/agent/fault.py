"""Fault injection for tests: stop this process at a named update step.

Set only by ``fault_stop_at`` in the agent's config file, read at start (never from the
environment, which an operator could set by accident). The process stops itself with
SIGSTOP after logging, so a test can wait for the stop and kill -9 it exactly there.
"""

from __future__ import annotations

import logging
import signal
import threading

from ppec.agent.config import AgentConfig

log = logging.getLogger(__name__)


def checkpoint(config: AgentConfig, step: str) -> None:
    if config.fault_stop_at == step:
        log.warning("fault_stop_at: stopping at step %s", step)
        for h in logging.getLogger().handlers:
            h.flush()
        # To this thread, not the process: a process-directed SIGSTOP may be taken by
        # another thread first, and this one would run on past the step meanwhile.
        signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
