"""The typer side of every command: the global options from typer's context, the shared
option types, and one wrapper that runs a command's body through ``ppec.cli.run.invoke``
(the Context opened and closed, errors rendered in the command's format)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Concatenate, ParamSpec

import typer

from ppec.cli.output import Fmt
from ppec.cli.run import Run, State, held, invoke, partial_exit

__all__ = ["CursorOpt", "LimitOpt", "OutputOpt", "Run", "State", "command", "held",
           "partial_exit"]
P = ParamSpec("P")

OutputOpt = Annotated[Fmt, typer.Option(
    "-o", "--output", help="table for people; json (one document on stdout) for scripts; "
                           "csv for lists.", case_sensitive=False)]
LimitOpt = Annotated[int | None, typer.Option(
    "--limit", min=1, help="At most N rows, by name; `-o json` gives next_cursor for the next "
                           "page (null on the last).")]
CursorOpt = Annotated[str | None, typer.Option(
    "--cursor", help="Start after this cursor: a previous page's next_cursor, as it is.")]


def command(fn: Callable[Concatenate[Run, P], None]) -> Callable[P, None]:
    """A typer command whose first parameter is its Run: the one place the global options
    are read (typer's context); the body runs through ``invoke``, and a non-zero exit code
    leaves as typer's Exit."""
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
        code = invoke(fn, run, args, kwargs, passthrough=(typer.Exit, typer.Abort))
        if code:
            raise typer.Exit(code)

    kw_only = [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    others = [p for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*others, *kw_only, hidden])
    wrapper.__annotations__ = {p.name: p.annotation for p in [*params, hidden]}
    return wrapper
