"""``ppec.cli.quick`` against typer: the table says what the typer declarations say,
every command line it parses gets the same values from click, and both paths print and
exit alike. The console script answers quick commands without importing typer."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer._click.exceptions import ClickException
from typer._click.types import IntRange, StringParamType
from typer._types import TyperChoice as Choice
from typer.core import TyperArgument as Argument
from typer.core import TyperOption as Option
from typer.main import get_command

from ppec.cli import main, quick
from ppec.cli.output import Fmt
from tests.realparts import Agent, Cli, wait_until

# What the quick path must not load: the CLI framework; and but for disk detach (which
# checks the maker-checker policy, whose signing code is heavier), `dataclasses` with the
# `inspect` it imports (7-10 ms here), which the store's records and the Context avoid.
FRAMEWORK = ("typer", "click", "rich")
DATACLASSES = ("dataclasses", "inspect")


def noun_app(noun: str) -> typer.Typer:
    module, attr, _, _ = main.NOUNS[noun]
    app: typer.Typer = getattr(importlib.import_module(f"ppec.cli.{module}"), attr)
    return app


def root_app() -> typer.Typer:
    """The root as ppec.cli.main builds it (its callback holds the global options), with
    the quick nouns under it: a new Typer, so main's own app is left as it is."""
    root = typer.Typer(name="ppec", add_completion=False, pretty_exceptions_enable=False)
    root.callback()(main.root)
    for noun in sorted({noun for noun, _ in quick.QUICK}):
        root.add_typer(noun_app(noun), name=noun)
    return root


ROOT = get_command(root_app())


@pytest.mark.parametrize("key", sorted(quick.QUICK), ids=" ".join)
def test_the_table_says_what_the_typer_declarations_say(key: tuple[str, str]) -> None:
    q = quick.QUICK[key]
    cmd = get_command(noun_app(key[0])).commands[key[1]]  # type: ignore[attr-defined]
    assert tuple(p.name for p in cmd.params if isinstance(p, Argument)) == q.args
    options = {p.name: p for p in cmd.params if isinstance(p, Option)}
    assert set(options) == {o.dest for o in q.opts}
    for opt in q.opts:
        p = options[opt.dest]
        assert tuple(p.opts) == opt.flags
        assert p.is_flag == (opt.kind == "flag")
        default = p.default.value if isinstance(p.default, Enum) else p.default
        assert default == opt.default
        if opt.kind == "choice":
            assert isinstance(p.type, Choice)
            assert tuple(p.type.choices) == opt.choices
        elif opt.kind == "int":
            assert isinstance(p.type, IntRange)
            assert (p.type.min, p.type.max) == (opt.minimum, opt.maximum)
        elif opt.kind == "str":
            assert isinstance(p.type, StringParamType)
    body = getattr(importlib.import_module(q.module), q.body)
    assert list(inspect.signature(body).parameters)[1:] == [*q.args,
                                                            *(o.dest for o in q.opts)]


def click_parse(argv: Sequence[str]) -> tuple[dict[str, Any], tuple[str, str],
                                              dict[str, Any]] | None:
    """(root options, (noun, verb), the command's values) as click reads ``argv``, or None
    when click refuses it or would show help."""
    try:
        ctx = ROOT.make_context("ppec", list(argv))
        rest = [*ctx._protected_args, *ctx.args]
        noun, group, rest = ROOT.resolve_command(ctx, rest)  # type: ignore[attr-defined]
        gctx = group.make_context(noun, rest, parent=ctx)
        rest = [*gctx._protected_args, *gctx.args]
        verb, cmd, rest = group.resolve_command(gctx, rest)
        cctx = cmd.make_context(verb, rest, parent=gctx)
    except (ClickException, typer.Exit):
        return None
    values = {k: v.value if isinstance(v, Enum) else v for k, v in cctx.params.items()}
    return dict(ctx.params), (noun, verb), values


@contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """These environment variables set (None: unset) for the block."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in values.items():
            if value is None:
                mp.delenv(name, raising=False)
            else:
                mp.setenv(name, value)
        yield


def same_as_click(argv: list[str]) -> bool:
    """When quick parses ``argv``, click gets the same values; True if quick parsed it."""
    parsed = quick.parse(argv)
    if parsed is None:
        return False
    seen = click_parse(argv)
    assert seen is not None, f"quick took {argv}, click refuses it"
    root, (noun, verb), values = seen
    assert quick.QUICK[(noun, verb)] is parsed.quick
    assert (root["db"], root["debug"], root["identity"]) == tuple(parsed.state)
    ours = {**dict(zip(parsed.quick.args, parsed.args, strict=True)), **parsed.kwargs}
    assert isinstance(ours["fmt"], Fmt)
    assert values == {k: v.value if isinstance(v, Enum) else v for k, v in ours.items()}
    return True


CANONICAL = [
    ["disk", "attach", "web-1", "--size", "16M"],
    ["disk", "attach", "web-1", "--size", "16M", "-o", "json"],
    ["disk", "attach", "--path", "/var/lib/ppec/disks/x.qcow2", "web-1", "--bus", "scsi"],
    ["disk", "attach", "web-1", "--size=1G", "--output=json", "--host", "bm-01"],
    ["--db", "/tmp/s.db", "disk", "list", "web-1"],
    ["--debug", "--identity=/k", "disk", "list", "web-1", "-o", "csv"],
    ["disk", "detach", "web-1", "vdb"],
    ["disk", "detach", "web-1", "vdb", "--timeout", "300", "--keep-volume", "-o", "json"],
    ["vm", "show", "web-1"], ["vm", "show", "web-1", "--xml"],
    ["--db=/s.db", "vm", "show", "--host", "bm-01", "web-1", "-o", "json"],
    ["vm", "start", "web-1"], ["vm", "start", "web-1", "--output=csv"],
    ["vm", "stop", "web-1"], ["vm", "stop", "--force", "web-1", "--timeout=3600"],
]


@pytest.mark.parametrize("argv", CANONICAL, ids=" ".join)
@pytest.mark.parametrize("env_db", [None, "/tmp/from-env.db"])
def test_the_usual_lines_are_quick_and_read_as_click_reads_them(argv: list[str],
                                                                env_db: str | None) -> None:
    with environment(PPEC_DB=env_db, PPEC_IDENTITY=None):
        assert same_as_click(argv)


NOT_QUICK = [
    ["disk", "attach", "--help"], ["disk", "attach", "web-1", "-h"], ["disk"],
    ["disk", "attach"], ["disk", "attach", "a", "b", "--size", "1G"],
    ["disk", "attach", "web-1", "--size"], ["disk", "attach", "web-1", "--bus", "ide"],
    ["disk", "attach", "web-1", "-o", "JSON"], ["disk", "attach", "web-1", "-ojson"],
    ["disk", "detach", "web-1", "vdb", "--timeout", "301"],
    ["disk", "detach", "web-1", "vdb", "--timeout", "-1"],
    ["disk", "detach", "web-1", "vdb", "--keep-volume=yes"],
    ["disk", "detach", "web-1", "vdb", "--timeout", "5", "--timeout", "6"],
    ["disk", "list", "--", "-web"], ["disk", "list", "web-1", "--bogus"],
    ["--version"], ["--db", "", "disk", "list", "web-1"], ["vm", "list"],
    ["--db", "x", "--db", "y", "disk", "list", "web-1"],
    ["vm", "stop", "web-1", "--no-force"], ["vm", "stop", "web-1", "--timeout", "3601"],
    ["vm", "stop", "web-1", "--timeout", "0"], ["vm", "show", "web-1", "--xml=yes"],
    ["vm", "show"], ["vm", "start", "a", "b"], ["vm", "delete", "web-1"],
    ["vm", "create", "web-1", "--flavor", "tiny"],
]


@pytest.mark.parametrize("argv", NOT_QUICK, ids=" ".join)
def test_help_usage_errors_and_other_nouns_are_left_to_typer(argv: list[str]) -> None:
    assert quick.parse(argv) is None


TOKENS = ["web-1", "vdb", "--size", "16M", "--size=1G", "--path", "/p.qcow2", "--bus",
          "virtio", "scsi", "ide", "--host", "h1", "-o", "json", "table", "csv", "JSON",
          "-ojson", "-o=json", "--output", "--output=csv", "--timeout", "0", "1", "300",
          "301", "020", "-5", "--keep-volume", "--keep-volume=1", "--", "-", "--help",
          "-h", "--bogus", "", "--db", "--debug", "--identity", "k"]
PREFIXES = [[], ["--db", "s.db"], ["--db=s.db"], ["--identity", "k"], ["--debug"],
            ["--debug", "--db", "s.db"], ["--db"], ["-h"]]


@settings(max_examples=600, deadline=None)
@given(prefix=st.sampled_from(PREFIXES),
       verb=st.sampled_from(["attach", "detach", "list", "--help", "atach"]),
       rest=st.lists(st.sampled_from(TOKENS), max_size=8),
       env_db=st.sampled_from([None, "", "/e.db"]))
def test_every_line_quick_reads_click_reads_the_same(prefix: list[str], verb: str,
                                                     rest: list[str],
                                                     env_db: str | None) -> None:
    with environment(PPEC_DB=env_db):
        same_as_click([*prefix, "disk", verb, *rest])


VALUES = {"str": st.sampled_from(["web-1", "vdb", "16M", "1G", "/var/lib/ppec/x.qcow2"])}


@st.composite
def quick_lines(draw: st.DrawFn) -> list[str]:
    """A command line every part of which quick takes: the table's own options with valid
    values, spelled `--opt value` or `--opt=value`, in any order among the arguments."""
    key = draw(st.sampled_from(sorted(quick.QUICK)))
    q = quick.QUICK[key]
    parts = [[draw(VALUES["str"])] for _ in q.args]
    for opt in draw(st.lists(st.sampled_from(q.opts), unique=True)):
        if opt.kind == "flag":
            parts.append([opt.flags[-1]])
            continue
        value = draw(st.sampled_from(opt.choices) if opt.kind == "choice" else
                     st.integers(opt.minimum, opt.maximum).map(str) if opt.kind == "int"
                     else VALUES["str"])
        flag = draw(st.sampled_from(opt.flags))
        parts.append([f"{flag}={value}"] if flag.startswith("--") and draw(st.booleans())
                     else [flag, value])
    positional = parts[:len(q.args)]
    options = draw(st.permutations(parts[len(q.args):]))
    cut = draw(st.integers(0, len(options)))
    prefix = draw(st.sampled_from(PREFIXES[:6]))
    return [*prefix, *key, *(t for p in [*options[:cut], *positional, *options[cut:]]
                             for t in p)]


@settings(max_examples=400, deadline=None)
@given(argv=quick_lines(), env_db=st.sampled_from([None, "/e.db"]))
def test_every_well_formed_line_is_quick_and_read_as_click_reads_it(
        argv: list[str], env_db: str | None) -> None:
    """The soup above mostly falls through to typer (about 2% is quick); here every line
    is one quick must take, so the comparison with click runs on each."""
    with environment(PPEC_DB=env_db):
        assert same_as_click(argv), argv


# -- both paths, end to end ---------------------------------------------------------------

RUN = """
import atexit, json, sys
out, path = sys.argv.pop(1), sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "ppec"
if path == "quick":
    from ppec.cli.entry import run
    run()
from ppec.cli.main import main   # typer parses every line
main()
"""


def both_one(cli: Cli, tmp_path: Path, path: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The line through the console script's path ("quick") or typer's alone."""
    out = tmp_path / f"{path}.json"
    done = subprocess.run([sys.executable, "-c", RUN, str(out), path, *args], env=cli.env,
                          capture_output=True, text=True, timeout=120, check=False)
    modules = {m.split(".")[0] for m in json.loads(out.read_text())}
    assert (path == "typer") == ("typer" in modules), (path, args)
    if path == "quick":
        unwanted = FRAMEWORK + (DATACLASSES if args[1] != "detach" else ())
        assert modules.isdisjoint(unwanted), sorted(modules & set(unwanted))
    return done


def both(cli: Cli, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], ...]:
    """The line through the console script's path and through typer's, one after the
    other (the second sees what the first did)."""
    return tuple(both_one(cli, tmp_path, path, *args) for path in ("quick", "typer"))


def same(a: subprocess.CompletedProcess[str], b: subprocess.CompletedProcess[str]) -> None:
    def norm(text: str) -> str:   # a new volume's name ends in 6 random hex digits
        return re.sub(r"-vd[a-z]+-[0-9a-f]{6}\.qcow2", "-VOL.qcow2", text)
    assert (a.returncode, norm(a.stdout), norm(a.stderr)) == \
        (b.returncode, norm(b.stdout), norm(b.stderr))


def test_both_paths_print_and_exit_alike(cli: Cli, test_agent: Agent, tmp_path: Path) -> None:
    cli.ok("host", "add", "t1", "--address", "local", "--socket", str(test_agent.socket))
    cli.ok("vm", "create", "web-1", "--cpus", "1", "--memory", "256M", "--disk", "1G")
    for fmt in ([], ["-o", "json"], ["-o", "csv"]):
        for args in (["disk", "list", "web-1"], ["disk", "list", "nope"],
                     ["disk", "attach", "web-1", "--size", "12X"],
                     ["disk", "attach", "web-1", "--size", "1G", "--path", "/x"],
                     ["disk", "attach", "web-1", "--size", "1G", "--host", "nowhere"],
                     ["disk", "attach", "web-1", "--size", "1G"],   # the driver refuses
                     ["disk", "detach", "web-1", "vdz"], ["disk", "detach", "web-1", "x"]):
            quick_done, typer_done = both(cli, tmp_path, *args, *fmt)
            assert quick_done.returncode != 0 or args[1] == "list", quick_done
            same(quick_done, typer_done)


def test_attach_and_detach_on_either_path_give_the_same_documents(
        cli: Cli, qemu_agent: Agent, tmp_path: Path) -> None:
    """On QEMU, a VM shut off (so a detach completes without a guest): attach by one path,
    detach by the other; then the other way round. Each pair prints the same."""
    cli.ok("host", "add", "q", "--address", "local", "--socket", str(qemu_agent.socket))
    cli.ok("vm", "create", "web-1", "--cpus", "1", "--memory", "128M", "--disk", "64M")
    cli.ok("vm", "stop", "web-1", "--force")
    for fmt in ([], ["-o", "json"]):
        done = {}
        for path in ("quick", "typer"):
            attach = both_one(cli, tmp_path, path, "disk", "attach", "web-1", "--size", "16M",
                              *fmt)
            listed = both_one(cli, tmp_path, path, "disk", "list", "web-1", *fmt)
            other = "typer" if path == "quick" else "quick"
            detach = both_one(cli, tmp_path, other, "disk", "detach", "web-1", "vdb", *fmt)
            done[path] = (attach, listed, detach)
            assert attach.returncode == listed.returncode == detach.returncode == 0, \
                (attach.stderr, listed.stderr, detach.stderr)
        for a, b in zip(done["quick"], done["typer"], strict=True):
            same(a, b)
    assert not list(qemu_agent.storage.glob("web-1-vd*"))


def test_vm_show_start_stop_print_and_exit_alike(cli: Cli, test_agent: Agent,
                                                 tmp_path: Path) -> None:
    cli.ok("host", "add", "t1", "--address", "local", "--socket", str(test_agent.socket))
    cli.ok("vm", "create", "web-1", "--cpus", "1", "--memory", "256M", "--disk", "1G")
    for fmt in ([], ["-o", "json"], ["-o", "csv"]):
        for args, ok in ((["vm", "show", "web-1"], True), (["vm", "show", "web-1", "--xml"],
                         True), (["vm", "start", "web-1"], True),   # running: nothing to do
                         (["vm", "show", "nope"], False), (["vm", "start", "nope"], False),
                         (["vm", "show", "web-1", "--host", "nowhere"], False),
                         (["vm", "stop", "nope", "--force"], False)):
            quick_done, typer_done = both(cli, tmp_path, *args, *fmt)
            # -o csv is for lists: a record refuses it (the XML is printed as it is).
            ok = ok and ("csv" not in fmt or "--xml" in args)
            assert (quick_done.returncode == 0) == ok, quick_done
            same(quick_done, typer_done)
    for fmt in ([], ["-o", "json"]):
        done = {}
        for path in ("quick", "typer"):
            stopped = both_one(cli, tmp_path, path, "vm", "stop", "web-1", "--force", *fmt)
            shown = both_one(cli, tmp_path, path, "vm", "show", "web-1", *fmt)
            started = both_one(cli, tmp_path, path, "vm", "start", "web-1", *fmt)
            assert stopped.returncode == shown.returncode == started.returncode == 0, \
                (stopped.stderr, shown.stderr, started.stderr)
            assert "shut-off" in shown.stdout and "running" in started.stdout
            done[path] = (stopped, shown, started)
        for a, b in zip(done["quick"], done["typer"], strict=True):
            same(a, b)
    assert cli.store_vms() == ["web-1"]


def test_a_dead_agent_reads_the_same_on_both_paths(cli: Cli, test_agent: Agent,
                                                   tmp_path: Path) -> None:
    cli.ok("host", "add", "t1", "--address", "local", "--socket", str(test_agent.socket))
    cli.ok("vm", "create", "web-1", "--cpus", "1", "--memory", "256M", "--disk", "1G")
    test_agent.kill()
    for args in (["disk", "list", "web-1"], ["disk", "attach", "web-1", "--size", "1G"],
                 ["disk", "list", "web-1", "-o", "json"]):
        quick_done, typer_done = both(cli, tmp_path, *args)
        assert quick_done.returncode == 1, quick_done.stderr
        assert "agent not running" in quick_done.stderr or \
            "AGENT_UNREACHABLE" in quick_done.stderr, quick_done.stderr
        same(quick_done, typer_done)


def test_ctrl_c_while_the_agent_thinks_exits_130_on_both_paths(cli: Cli, test_agent: Agent,
                                                               tmp_path: Path) -> None:
    """Interrupted while waiting for an agent's reply (the agent stopped with SIGSTOP),
    either path exits 130 without a traceback, as typer's main makes of Ctrl-C."""
    cli.ok("host", "add", "t1", "--address", "local", "--socket", str(test_agent.socket))
    cli.ok("vm", "create", "web-1", "--cpus", "1", "--memory", "256M", "--disk", "1G")
    assert test_agent.proc is not None
    test_agent.proc.send_signal(signal.SIGSTOP)
    try:
        for path in ("quick", "typer"):
            before = queued(test_agent.socket)
            proc = subprocess.Popen([sys.executable, "-c", RUN, str(tmp_path / "m.json"),
                                     path, "disk", "list", "web-1"], env=cli.env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            # Connected and waiting: the stopped agent's listen queue holds its connection.
            wait_until(lambda: queued(test_agent.socket) > before, 30,  # noqa: B023
                       "the CLI's connection")
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
            assert (proc.returncode, out, err) == (130, "", ""), (path, err)
    finally:
        test_agent.proc.send_signal(signal.SIGCONT)


def queued(sock: Path) -> int:
    """Connections waiting in this listening Unix socket's accept queue (`ss`: Recv-Q)."""
    out = subprocess.run(["ss", "-xlH", "src", str(sock)], capture_output=True, text=True,
                         check=True).stdout.split()
    return int(out[2])
