"""``ppec completion bash|zsh|fish``: the shell completion script."""

from __future__ import annotations

from enum import StrEnum

import typer


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def script(shell: str) -> str:
    # typer's own script: it calls back into `ppec` with _PPEC_COMPLETE=complete_<shell>,
    # which typer answers before running any command. tests/cli/test_completion.py
    # drives that round trip, so a typer upgrade that moves this fails loudly.
    from typer._completion_shared import get_completion_script
    return get_completion_script(prog_name="ppec", complete_var="_PPEC_COMPLETE", shell=shell)


def completion(shell: Shell = typer.Argument(..., help="bash, zsh or fish")) -> None:
    """Print the shell completion script (also shipped in completions/).

    bash: ppec completion bash > /etc/bash_completion.d/ppec
    zsh:  ppec completion zsh > "${fpath[1]}/_ppec"
    fish: ppec completion fish > ~/.config/fish/completions/ppec.fish
    """
    typer.echo(script(shell.value))
