"""``ppec serve``: the long-running service (periodic jobs; HTTP API and UI beside them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ppec.cli.common import Run, command


@command
def serve(run: Run, listen: Annotated[str, typer.Option(
              "--listen", help="ADDRESS:PORT for the HTTP API and web UI.")]
          = "127.0.0.1:8480",
          once: Annotated[bool, typer.Option(
              "--once", help="One round of every job, then exit (for cron and tests).")]
          = False,
          token_file: Annotated[Path | None, typer.Option(
              "--token-file", help="Bearer token for HTTP (required off loopback).")]
          = None) -> None:
    """Keep the fleet view fresh: snapshots, drift alerts and agent file checks on every
    host, on the intervals of the config's [serve] table. Logs JSON lines on stderr.

    Of several services on one store only the leader runs the jobs. With --once: exit 0
    when every host answered, 5 when some failed, 1 when all did; bad config exits 2."""
    from ppec.service import main as service
    from ppec.service.settings import load
    settings = load(db=run.state.db, listen=listen, token_file=token_file,
                    once=once)
    raise typer.Exit(service.serve(settings))
