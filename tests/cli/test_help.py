"""Start-up cost and shell completion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ppec.cli.completion import script
from tests.realparts import PPEC

COMPLETIONS = Path(__file__).parents[2] / "completions"
HEAVY = ("paramiko", "libvirt", "psutil", "filelock", "cryptography", "tarfile", "ctypes")


@pytest.mark.parametrize("argv", [["--help"], ["vm", "list", "--help"], ["vm", "--help"],
                                  ["host", "add", "--help"], ["completion", "bash"],
                                  ["disk", "--help"], ["agent", "sync", "--help"]])
def test_help_imports_neither_paramiko_nor_libvirt(argv: list[str]) -> None:
    code = (f"import sys; sys.argv=['ppec', *{argv!r}]\n"
            "from ppec.cli.main import main\n"
            "try: main()\nexcept SystemExit as e: code = e.code\n"
            f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
            "sys.stderr.write(f'EXIT={code} HEAVY={heavy}')")
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code],
                          capture_output=True, text=True, timeout=60, check=False)
    assert "EXIT=0 HEAVY=[]" in done.stderr, done.stderr[-500:]
    imported = {line.split("|")[-1].strip().split(".")[0]
                for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & set(HEAVY)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shipped_completion_scripts_are_current(shell: str) -> None:
    # Regenerate with: for s in bash zsh fish; do ppec completion $s > completions/ppec.$s; done
    assert (COMPLETIONS / f"ppec.{shell}").read_text() == script(shell) + "\n"


def test_bash_completion_round_trip() -> None:
    """The shipped script's callback really completes sub-commands and options."""
    env = {**os.environ, "_PPEC_COMPLETE": "complete_bash", "COMP_WORDS": "ppec vm cr",
           "COMP_CWORD": "2"}
    done = subprocess.run([PPEC], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.stdout.split() == ["create"]
    env.update(COMP_WORDS="ppec vm create x --fl", COMP_CWORD="4")
    done = subprocess.run([PPEC], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert "--flavor" in done.stdout.split()
    assert "_PPEC_COMPLETE=complete_bash" in (COMPLETIONS / "ppec.bash").read_text()


REAL_ROOT_HELP = """
import sys
from ppec.cli import main as m
m.register(list(m.NOUNS))
m.app(args=["--help"], prog_name="ppec", standalone_mode=False)
"""


def test_root_help_lists_every_noun_as_its_module_says() -> None:
    """`ppec --help` names the nouns from main.NOUNS without importing them; what it
    prints must be what the modules themselves would print (a changed help line in a
    module fails here until NOUNS says the same)."""
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100"}
    lazy = subprocess.run([PPEC, "--help"], env=env, capture_output=True, text=True,
                          timeout=60, check=True).stdout
    real = subprocess.run([sys.executable, "-c", REAL_ROOT_HELP], env=env,
                          capture_output=True, text=True, timeout=60, check=True).stdout
    assert "Commands:" in lazy and "  vm " in lazy
    assert lazy == real


def test_root_help_imports_no_noun_module() -> None:
    code = ("import sys; sys.argv=['ppec', '--help']\n"
            "from ppec.cli.main import main, NOUNS\n"
            "try: main()\nexcept SystemExit: pass\n"
            "mods = {f'ppec.cli.{m}' for m, *_ in NOUNS.values()}\n"
            "sys.stderr.write(f'LOADED={sorted(mods & set(sys.modules))}')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert "LOADED=[]" in done.stderr, done.stderr[-500:]


def test_only_the_named_verb_is_built_but_groups_stay_whole() -> None:
    """`ppec vm list` builds only `list`; a group's help and a mistyped verb still see
    every command of the group."""
    from ppec.cli import main as m
    from ppec.cli import vm
    only = m._only(vm.app, "list")
    assert [c.name for c in only.registered_commands] == ["list"]
    assert len(vm.app.registered_commands) > 1          # the module's group is untouched
    assert m._only(vm.app, "lst") is vm.app
    env = {**os.environ, "NO_COLOR": "1"}
    typo = subprocess.run([PPEC, "vm", "lst"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert typo.returncode == 2 and "Did you mean 'list'?" in typo.stderr
    group = subprocess.run([PPEC, "vm", "--help"], env=env, capture_output=True, text=True,
                           timeout=60, check=True).stdout
    assert all(f"  {verb} " in group for verb in ("create", "list", "show", "delete"))
