"""``ppec``: the entry point and global options; where what fails before a command runs
(usage, parsing) becomes an exit code. A command's own failure: ``ppec.cli.run.invoke``."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any, NoReturn

import typer

from ppec import __version__
from ppec.cli import output
from ppec.cli.common import State
from ppec.cli.run import internal_error
from ppec.core.errors import EXIT_FAILED, EXIT_USAGE, PpecError

app = typer.Typer(
    name="ppec", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help and one-block usage errors, no boxes
    help="Run a fleet of KVM virtual machines on bare-metal hosts.\n\n"
         "Exit codes: 0 done, 1 failed, 2 bad usage or input, 3 no host can take it, "
         "4 held for approval, 5 some hosts failed, 10 drift found.",
    context_settings={"help_option_names": ["-h", "--help"]})
# noun -> (module, attribute, a group or one command, its one-line help). Only the noun a
# command line names is imported: `ppec host list` does not pay for the vm, disk,
# agent-sync or serve modules (and what they import). The root help (`ppec`, `ppec --help`)
# lists the nouns from this table without importing any of them; tests/cli/test_help.py
# holds these lines equal to the modules' own help. Completion loads them all.
NOUNS: dict[str, tuple[str, str, bool, str]] = {
    "host": ("host", "app", True,
             "Bare-metal hosts: add, list, show, remove, drain, evacuate, restore, top."),
    "vm": ("vm", "app", True,
           "Virtual machines: create, list, show, start, stop, delete, migrate, stats, logs, "
           "console."),
    "disk": ("disk", "app", True, "Data disks: list, attach (new or existing volume), detach."),
    "agent": ("agent_cmd", "app", True,
              "Host agents: status, sync (keep their files at this version), rollback."),
    "ip": ("ip", "app", True, "IP pools per VRF: add pools, allocate, release, list."),
    "image": ("image", "app", True,
              "Base images by SHA-256: add, list, show, remove, push to hosts."),
    "request": ("request", "app", True,
                "Maker-checker requests: list, show, approve, reject, cancel."),
    "audit": ("request", "audit_app", True, "The hash-chained audit log: list, verify."),
    "config": ("config_cmd", "app", True, "Operator configuration: show the effective values."),
    "place": ("place", "place", False,
              "Show where a VM of this shape would be placed; build nothing. Exit 3 if nowhere."),
    "rebalance": ("rebalance", "rebalance", False,
                  "A rebalancing plan (hbal-like): moves that each keep every placement "
                  "rule (HA"),
    "alerts": ("alerts", "alerts", False,
               "Ask every agent to compare its ledger with libvirt now, and list what differs."),
    "sync": ("sync", "sync", False,
             "Ask every host's agent for its statistics and store them as its latest snapshot."),
    "capacity": ("capacity", "capacity", False,
                 "Cores, memory, disk and utilization per group; with a shape (--flavor or"),
    "completion": ("completion", "completion", False,
                   "Print the shell completion script (also shipped in completions/)."),
    "serve": ("serve", "serve", False,
              "Keep the fleet view fresh: snapshots, drift alerts and agent file checks on "
              "every"),
}
GLOBAL_WITH_VALUE = ("--db", "--identity")


def register(nouns: list[str], verb: str | None = None) -> None:
    """Add these nouns' commands to the root app; with ``verb`` (one noun), of a group
    only that sub-command: typer turns every registered command's signature into click
    options on each run, which `ppec vm list` need not pay for `vm create`'s twenty."""
    import importlib
    for noun in nouns:
        module, attr, group, _ = NOUNS[noun]
        target = getattr(importlib.import_module(f"ppec.cli.{module}"), attr)
        if group:
            app.add_typer(_only(target, verb) if verb else target, name=noun)
        else:
            app.command(noun)(target)


def _only(group: typer.Typer, verb: str) -> typer.Typer:
    """A copy of ``group`` holding only ``verb`` (a command or a sub-group), or the group
    as it is when it has no such verb (click then lists them all in its error)."""
    import copy
    commands = [c for c in group.registered_commands if c.name == verb]
    groups = [g for g in group.registered_groups if g.name == verb]
    if not commands and not groups:
        return group
    clone = copy.copy(group)
    clone.registered_commands, clone.registered_groups = commands, groups
    return clone


def register_listing() -> None:
    """Every noun as an empty stand-in with its help line, for the root help and for a
    noun we do not know (click's own "No such command"): nothing of theirs is imported."""
    for noun, (_, _, group, line) in NOUNS.items():
        if group:
            app.add_typer(typer.Typer(help=line), name=noun)
        else:
            app.command(noun, help=line)(_stand_in)


def _stand_in() -> None:   # never run: only named in the root help
    raise AssertionError("a stand-in command ran")


def named(args: list[str]) -> tuple[str | None, str | None]:
    """The noun a command line names (after the global options), if one we know, and the
    word right after it (its verb, when the noun is a group)."""
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
        elif arg in GLOBAL_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            if arg not in NOUNS:
                return None, None
            rest = args[i + 1:i + 2]
            return arg, rest[0] if rest and not rest[0].startswith("-") else None
    return None, None

def _version(value: bool) -> None:
    if value:
        print(f"ppec {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
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
    ctx.obj = State(db=db, debug=debug, identity=identity)


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the CLI: commands render their own errors (ppec.cli.common.command); what
    reaches here is bad usage typer found while parsing, or a failure outside any command."""
    args = sys.argv[1:] if argv is None else list(argv)
    if "_PPEC_COMPLETE" in os.environ:
        # A completion request from the scripts in completions/: typer registers its
        # shell classes only on demand (we turn its --install-completion option off).
        from typer._completion_classes import completion_init
        completion_init()
    if "_PPEC_COMPLETE" in os.environ:
        register(list(NOUNS))
    elif (noun_verb := named(args))[0] is not None:
        register([str(noun_verb[0])], noun_verb[1])
    else:
        register_listing()
    from typer._click import exceptions as click_errors
    try:
        code = app(args=args, prog_name="ppec", standalone_mode=False)
    except click_errors.NoArgsIsHelpError as e:   # `ppec vm`: its help, as typer shows it
        e.show()
        sys.exit(e.exit_code)
    except click_errors.UsageError as e:
        sys.exit(_bad_usage(e, args))
    except click_errors.ClickException as e:
        output.error(PpecError(e.format_message()), output.format_in(args))
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.stderr.write("ppec: aborted\n")
        sys.exit(EXIT_FAILED)
    except PpecError as e:
        output.error(e, output.format_in(args))
        sys.exit(e.exit_code)
    except Exception as e:  # a bug outside any command: one line unless --debug
        internal_error(e, "--debug" in args)
        sys.exit(EXIT_FAILED)
    sys.exit(code if isinstance(code, int) else 0)


def _bad_usage(e: Any, args: list[str]) -> int:
    """What typer refuses while parsing (an option out of range, a bad choice, a missing
    argument) as ppec's own one-line error: exit 2, JSON with -o json."""
    # typer's validation prefixes choices with "Value error, ": noise to an operator.
    message = " ".join(e.format_message().split()).replace(": Value error, ", ": ")
    where = e.ctx.command_path if e.ctx is not None else "ppec"
    output.error(PpecError(f"{message} (see `{where} --help`)", code="BAD_USAGE"),
                 output.format_in(args))
    return EXIT_USAGE
