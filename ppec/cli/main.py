"""``ppec``: the entry point, global options, and the one place errors become exit codes."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated

import typer

from ppec import __version__
from ppec.cli import (
    agent_cmd,
    alerts,
    capacity,
    completion,
    config_cmd,
    disk,
    host,
    ip,
    output,
    place,
    request,
    sync,
    vm,
)
from ppec.core.errors import EXIT_FAILED, PpecError

app = typer.Typer(
    name="ppec", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help and one-block usage errors, no boxes
    help="Run a fleet of KVM virtual machines on bare-metal hosts.\n\n"
         "Exit codes: 0 done, 1 failed, 2 bad usage or input, 3 no host can take it, "
         "4 held for approval, 5 some hosts failed, 10 drift found.",
    context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(host.app, name="host")
app.add_typer(vm.app, name="vm")
app.add_typer(disk.app, name="disk")
app.add_typer(agent_cmd.app, name="agent")
app.add_typer(ip.app, name="ip")
app.add_typer(request.app, name="request")
app.add_typer(request.audit_app, name="audit")
app.add_typer(config_cmd.app, name="config")
app.command("place")(place.place)
app.command("alerts")(alerts.alerts)
app.command("sync")(sync.sync)
app.command("capacity")(capacity.capacity)
app.command("completion")(completion.completion)
app.command("serve")(__import__("ppec.cli.serve", fromlist=["serve"]).serve)


def _version(value: bool) -> None:
    if value:
        print(f"ppec {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    db: Annotated[str | None, typer.Option(
        "--db", envvar="PPEC_DB", help="Store: a SQLite file path "
                                       "(default $XDG_DATA_HOME/ppec/ppec.db).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    identity: Annotated[str | None, typer.Option(
        "--identity", envvar="PPEC_IDENTITY",
        help="Your SSH private key, for signing requests and approvals (default: "
             "ssh-agent). Who you are is proven by this key, never by $USER.")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    output.current["debug"] = debug
    output.current["db"] = db
    output.current["identity"] = identity


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; typer exits for usage errors (2) and ``typer.Exit``; we map the rest."""
    if "_PPEC_COMPLETE" in os.environ:
        # A completion request from the scripts in completions/: typer registers its
        # shell classes only on demand (we turn its --install-completion option off).
        from typer._completion_classes import completion_init
        completion_init()
    try:
        app(args=argv, prog_name="ppec")
    except PpecError as e:
        if output.current["debug"]:
            traceback.print_exc()
        output.error(e)
        sys.exit(e.exit_code)
    except Exception as e:  # a bug: one line unless --debug
        if output.current["debug"]:
            traceback.print_exc()
        else:
            sys.stderr.write(f"ppec: internal error: {type(e).__name__}: {e} "
                             f"(run with --debug for the traceback)\n")
        sys.exit(EXIT_FAILED)
