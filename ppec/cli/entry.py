"""The ``ppec`` console script: one command in a process that lives as long as it does.

Start-up and exit are most of a runbook command's time (docs/speed.md). Two costs here are
the garbage collector's, not ppec's: while some 200 modules load, allocation keeps
triggering collections that find nothing (every object is module state that lives to the
end), and at exit the interpreter collects them all once more before freeing them. So the
collector is off while modules load; ``ppec.cli.run.invoke`` (every command's body runs
through it) moves what start-up made to the permanent generation (``gc.freeze``) and
turns the collector back on before the command's own work, which may run for hours
(``ppec serve``, ``--watch``, ``vm console``); and at exit what is left is frozen too.
Reference counting still frees everything that is not a cycle; atexit handlers and
flushes run as usual.

Before any of that, ``ppec.cli.quick`` answers the few hot verbs it can parse without
loading typer at all.

Only this script does it: ``main()`` called in another process (tests, a library user)
leaves that process's collector alone.
"""

from __future__ import annotations

import gc
import sys


def run() -> None:
    gc.disable()
    try:
        from ppec.cli import quick
        code = quick.run(sys.argv[1:])
        if code is None:   # anything but a few hot verbs: typer parses it
            from ppec.cli.main import main
            main()
        sys.exit(code)
    finally:
        gc.freeze()   # the interpreter's last collection skips what is frozen

