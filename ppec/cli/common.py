"""What every command shares: opening the context from the global options."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from ppec.cli import output
from ppec.context import Context
from ppec.errors import EXIT_FAILED, EXIT_PARTIAL


@contextmanager
def context() -> Iterator[Context]:
    ctx = Context.open(output.current.get("db"))
    try:
        yield ctx
    finally:
        ctx.close()


def partial_exit(failed: int, total: int) -> None:
    """Exit 5 when some hosts failed, 1 when every host did."""
    if failed:
        raise typer.Exit(EXIT_FAILED if failed == total else EXIT_PARTIAL)
