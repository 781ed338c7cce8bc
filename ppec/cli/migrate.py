"""``ppec vm migrate``'s body: the progress meter and the maker-checker request (loaded
only by that command; ``ppec.cli.vm`` declares it)."""

from __future__ import annotations

import sys
import threading
from typing import Any

from ppec.cli import output
from ppec.cli.common import Run
from ppec.cli.output import Fmt
from ppec.core.units import format_size


def run_migrate(run: Run, ask: Any, fmt: Fmt) -> None:
    from ppec.operator import migrate as mover
    run.hold_if("vm", "migrate", lambda signer: _request(run, signer, ask))
    meter = _Meter(fmt is Fmt.table and sys.stderr.isatty())
    try:
        # No meter, no second connection reading the job's progress.
        doc = mover.migrate(run.ctx, ask, progress=meter.update if meter.live else None)
    finally:
        meter.clear()
    output.emit_record(fmt, doc, message=f"{ask.name}: moved from {doc.get('from')} to "
                                         f"{doc['host']}")


def _request(run: Run, signer: Any, ask: Any) -> dict[str, Any]:
    from ppec.operator import makerchecker
    return makerchecker.request_vm_migrate(run.ctx, signer, ask)


class _Meter:
    """Memory and disk left, and the pass over memory, on one stderr line (a terminal)."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.lock = threading.Lock()

    def update(self, doc: dict[str, Any]) -> None:
        job = doc.get("job") or {}
        if not self.live or not job:
            return
        text = (f"{doc.get('name')}: memory {format_size(job.get('memory_remaining', 0))} "
                f"left of {format_size(job.get('memory_total', 0))}, disk "
                f"{format_size(job.get('disk_remaining', 0))} left of "
                f"{format_size(job.get('disk_total', 0))}, pass "
                f"{job.get('memory_iteration', 0)}")
        with self.lock:
            sys.stderr.write("\r\033[K" + text[:200])
            sys.stderr.flush()

    def clear(self) -> None:
        if self.live:
            sys.stderr.write("\r\033[K")
