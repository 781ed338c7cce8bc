"""What every command shares: the global options (in typer's context), one wrapper that
opens the operator Context and renders errors in the command's format, the VM shape from
the options, and the maker-checker hold."""

from __future__ import annotations

import functools
import inspect
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, NoReturn, ParamSpec

import typer

from ppec.cli import output
from ppec.cli.output import Fmt
from ppec.core.errors import EXIT_FAILED, EXIT_PARTIAL, EXIT_PENDING, PpecError

if TYPE_CHECKING:   # loaded on first use: `ppec --help` needs neither
    from ppec.core.signing import Signer
    from ppec.operator.context import Context

P = ParamSpec("P")


@dataclass(frozen=True)
class State:
    """The global options (`ppec --db … --identity … --debug`), kept in ``ctx.obj``."""

    db: str | None = None
    debug: bool = False
    identity: str | None = None


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


def command(fn: Callable[Concatenate[Run, P], None]) -> Callable[P, None]:
    """A typer command whose first parameter is its Run: the one place the global options
    are read (typer's context), the operator Context opened and closed, and a PpecError
    turned into a message in the command's -o format and an exit code."""
    signature = inspect.signature(fn, eval_str=True)
    params = list(signature.parameters.values())[1:]
    # typer fills a parameter annotated typer.Context; the command itself never sees it.
    hidden = inspect.Parameter("_typer_ctx", inspect.Parameter.KEYWORD_ONLY,
                               annotation=typer.Context)

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        obj = getattr(kwargs.pop("_typer_ctx"), "obj", None)
        state = obj if isinstance(obj, State) else State()
        fmt = kwargs.get("fmt", Fmt.table)
        run = Run(state, fmt if isinstance(fmt, Fmt) else Fmt.table)
        try:
            fn(run, *args, **kwargs)
        except PpecError as e:
            if state.debug:
                traceback.print_exc()
            output.error(e, run.fmt)
            raise typer.Exit(e.exit_code) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as e:  # a bug: one line unless --debug
            internal_error(e, state.debug)
        finally:
            run.close()

    kw_only = [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    others = [p for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*others, *kw_only, hidden])
    wrapper.__annotations__ = {p.name: p.annotation for p in [*params, hidden]}
    return wrapper


def internal_error(e: BaseException, debug: bool) -> NoReturn:
    if debug:
        traceback.print_exc()
    else:
        sys.stderr.write(f"ppec: internal error: {type(e).__name__}: {e} "
                         f"(run with --debug for the traceback)\n")
    raise typer.Exit(EXIT_FAILED)


def partial_exit(failed: int, total: int) -> None:
    """Exit 5 when some hosts failed, 1 when every host did."""
    if failed:
        raise typer.Exit(EXIT_FAILED if failed == total else EXIT_PARTIAL)


def held(fmt: Fmt, request: dict[str, Any]) -> NoReturn:
    """A request was created instead of acting: say so, exit 4."""
    if fmt is Fmt.json:
        output.emit_json(request)
    else:
        typer.echo(f"request {request['id']} created: {request['operation']} "
                   f"{request['resource']} waits for a second person's approval "
                   f"(`ppec request approve {request['id']}`)")
    raise typer.Exit(EXIT_PENDING)
