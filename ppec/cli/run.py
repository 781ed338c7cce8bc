"""One command's run, without the CLI framework: the global options, the operator
Context, the maker-checker hold, and the one place a command's own failure becomes a
message and an exit code (usage errors, before any command runs: ``ppec.cli.main``).

Nothing here imports typer: the typer commands (``ppec.cli.common.command``) and the
commands answered without typer (``ppec.cli.quick``) run their bodies through
``invoke`` alike, so both paths fail, print and exit the same way.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from ppec.cli import output
from ppec.cli.output import Fmt
from ppec.core.errors import EXIT_FAILED, EXIT_PARTIAL, EXIT_PENDING, PpecError

if TYPE_CHECKING:   # loaded on first use: `ppec --help` needs neither
    from ppec.core.signing import Signer
    from ppec.operator.context import Context


class State(NamedTuple):
    """The global options (`ppec --db … --identity … --debug`). A NamedTuple: defining a
    frozen dataclass costs ~0.5 ms, on the path of every command."""

    db: str | None = None
    debug: bool = False
    identity: str | None = None


class ExitCode(Exception):
    """Leave the command with this exit code; what it had to say is already printed."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Run:
    """One command's run: the global options, the output format, and the operator
    Context, opened on first use (`ppec config show` never opens the store)."""

    def __init__(self, state: State, fmt: Fmt) -> None:
        self.state = state
        self.fmt = fmt
        self._ctx: Context | None = None

    @property
    def ctx(self) -> Context:
        if self._ctx is None:
            from ppec.operator.context import Context
            self._ctx = Context.open(self.state.db)
        return self._ctx

    def signer(self) -> Signer:
        from ppec.core.signing import Signer
        return Signer(self.state.identity)

    def hold_if(self, rtype: str, operation: str,
                make: Callable[[Signer], dict[str, Any]]) -> None:
        """When policy puts this operation under maker-checker, make the request (signed
        by the caller) and exit 4 instead of acting; else return and let the caller act."""
        from ppec.operator import makerchecker
        if makerchecker.needs(self.ctx, rtype, operation):
            held(self.fmt, make(self.signer()))

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None


def resume_collection() -> None:
    """Called as a command starts: if this process started with the collector off (the
    console script, ``ppec.cli.entry``), keep start-up's objects out of every later
    collection and turn it back on."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def invoke(body: Callable[..., None], run: Run, args: tuple[Any, ...],
           kwargs: dict[str, Any], passthrough: tuple[type[BaseException], ...] = ()
           ) -> int:
    """Run a command's body: its exit code, 0 when it returns. A PpecError is printed in
    the command's format with its code; anything else is a bug, one line unless --debug.
    ``passthrough`` names exceptions the caller's framework handles itself."""
    resume_collection()
    try:
        body(run, *args, **kwargs)
        return 0
    except ExitCode as e:
        return e.code
    except PpecError as e:
        if run.state.debug:
            _print_traceback()
        output.error(e, run.fmt)
        return e.exit_code
    except passthrough:
        raise
    except Exception as e:  # a bug: one line unless --debug
        internal_error(e, run.state.debug)
        return EXIT_FAILED
    finally:
        run.close()


def _print_traceback() -> None:
    import traceback  # only with --debug
    traceback.print_exc()


def internal_error(e: BaseException, debug: bool) -> None:
    if debug:
        _print_traceback()
    else:
        sys.stderr.write(f"ppec: internal error: {type(e).__name__}: {e} "
                         f"(run with --debug for the traceback)\n")


def partial_exit(failed: int, total: int) -> None:
    """Exit 5 when some hosts failed, 1 when every host did."""
    if failed:
        raise ExitCode(EXIT_FAILED if failed == total else EXIT_PARTIAL)


def held(fmt: Fmt, request: dict[str, Any]) -> NoReturn:
    """A request was created instead of acting: say so, exit 4."""
    if fmt is Fmt.json:
        output.emit_json(request)
    else:
        sys.stdout.write(f"request {request['id']} created: {request['operation']} "
                         f"{request['resource']} waits for a second person's approval "
                         f"(`ppec request approve {request['id']}`)\n")
    raise ExitCode(EXIT_PENDING)
