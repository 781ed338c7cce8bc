"""The agent checks its own installed files against the release it last accepted: at
start and every ``verify_interval``. A difference is the drift alert AGENT_FILES_CHANGED
(reported by ``drift.check``, so ``ppec alerts`` shows it) and a log line each time."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ppec.agent.context import AgentContext
from ppec.agent.releases import Releases, differ
from ppec.wire import bundle as pkgfiles

log = logging.getLogger(__name__)
CODE = "AGENT_FILES_CHANGED"
OBJECT = "ppec-agent"


def alerts_for(names: list[str], root: Path) -> list[tuple[str, str, str]]:
    if not names:
        return []
    shown = ", ".join(names[:10]) + (f" (+{len(names) - 10} more)" if len(names) > 10 else "")
    return [(CODE, OBJECT, f"{len(names)} file(s) under {root} differ from the accepted "
                           f"release: {shown}")]


def check(ctx: AgentContext, releases: Releases) -> list[tuple[str, str, str]]:
    """Compare now; keep the result on ``ctx`` and log it when there is a difference."""
    root = pkgfiles.package_root()
    current = releases.pointer().current
    want = releases.accepted().get(current) if current else None
    if want is None:   # no accepted release recorded: what runs is the reference
        want = ctx.running
    names = differ(want, pkgfiles.manifest(root))
    # Files on disk that match but differ from what this process runs (a swap behind
    # its back it has not restarted onto) are drift too: name what runs differently.
    if not names and want != ctx.running:
        names = [f"running:{n}" for n in differ(want, ctx.running)]
    ctx.file_alerts = alerts_for(names, root)
    if names:
        log.warning("%s: %s", CODE, ctx.file_alerts[0][2])
    return ctx.file_alerts


def start(ctx: AgentContext, releases: Releases, interval: float,
          stopping: threading.Event,
          locked: Callable[[], AbstractContextManager[Any]]) -> None:
    """Every ``interval`` seconds (0: never again after start), under the host lock, so an
    update's exchange is never seen half-way."""
    if interval <= 0:
        return

    def loop() -> None:
        while not stopping.wait(interval):
            try:
                with locked():
                    if not ctx.restart_requested:
                        check(ctx, releases)
            except Exception:   # a failed check must not stop the next one
                log.exception("file verification failed")
    threading.Thread(target=loop, name="verify", daemon=True).start()
