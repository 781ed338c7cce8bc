"""A change made of steps, each with its undo: all of it happens, or none of it stays.

A VM's create is disk, seed, domain, start; migration and images add their own. Keeping
each step beside its undo (instead of flags saying which were done) lets a new step join
without touching the undo path, and the error names the step that failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ppec.core.errors import PpecError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    name: str
    do: Callable[[], object]
    undo: Callable[[], object]


def run(what: str, steps: Sequence[Step]) -> None:
    """Each step in turn; on a failure, the done ones undone in reverse, then one
    PpecError ``"{what} failed at step '{name}': …"`` with ``details.step``."""
    done: list[Step] = []
    for step in steps:
        try:
            step.do()
        except Exception as e:
            log.warning("%s failed at %s: %s; undoing", what, step.name, e)
            for earlier in reversed(done):
                try:
                    earlier.undo()
                except Exception as undo_error:   # the next undo must still run
                    log.error("%s: undoing %s failed: %s", what, earlier.name, undo_error)
            if not isinstance(e, PpecError):   # a timeout, an OSError: still one clean error
                raise PpecError(f"{what} failed at step '{step.name}': {e}",
                                details={"step": step.name}) from None
            e.message = f"{what} failed at step '{step.name}': {e.message}"
            e.details["step"] = step.name
            raise
        done.append(step)
