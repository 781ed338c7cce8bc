"""Read-only commands and --help import only what they use: no numpy, paramiko, libvirt,
fastapi or uvicorn. The real ``ppec`` entry point runs in a fresh interpreter on an
empty store; at exit it writes the names in sys.modules, which this test reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.realparts import Agent, Cli

HEAVY = ("numpy", "paramiko", "libvirt", "fastapi", "uvicorn")

# Runs ppec's own main() as the console script does; sys.exit still runs atexit.
WRAPPER = """
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "ppec"
from ppec.cli.main import main
main()
"""

COMMANDS = [["--help"], ["host", "list"], ["vm", "list"], ["request", "list"],
            ["config", "show"], ["serve", "--help"]]


def loaded(args: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "NO_COLOR": "1"}
    env.pop("PPEC_DB", None)
    env.pop("PPEC_CONFIG", None)
    out = tmp_path / "modules.json"
    done = subprocess.run([sys.executable, "-c", WRAPPER, str(out), *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    return done, json.loads(out.read_text())


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_read_only_commands_import_nothing_heavy(args: list[str], tmp_path: Path) -> None:
    done, modules = loaded(args, tmp_path)
    assert done.returncode == 0, done.stderr
    heavy = sorted({m.split(".")[0] for m in modules} & set(HEAVY))
    assert heavy == [], f"ppec {' '.join(args)} imported {', '.join(heavy)}"


def test_the_wrapper_sees_imports(tmp_path: Path) -> None:
    """The check can fail: a command that does import numpy is seen doing it."""
    done, modules = loaded(["--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ppec.cli.main" in modules and "typer" in modules
    env_probe = subprocess.run(
        [sys.executable, "-c", WRAPPER.replace("from ppec.cli.main import main",
                                               "import numpy\nfrom ppec.cli.main import main"),
         str(tmp_path / "probe.json"), "--help"], capture_output=True, text=True,
        timeout=120, check=False)
    assert env_probe.returncode == 0
    assert "numpy" in json.loads((tmp_path / "probe.json").read_text())


@pytest.mark.parametrize("args", [["host", "list"], ["--db", "STORE", "vm", "list"],
                                  ["request", "list"]], ids=" ".join)
def test_a_command_loads_only_its_own_noun(args: list[str], tmp_path: Path) -> None:
    """`ppec host list` imports the host commands, not every other noun's module (and
    what those import); --help still lists them all (test_help)."""
    args = [str(tmp_path / "x.db") if a == "STORE" else a for a in args]
    done, modules = loaded(args, tmp_path)
    assert done.returncode == 0, done.stderr
    noun = next(a for a in args if a in ("host", "vm", "request"))
    own = {"request": "request", "host": "host", "vm": "vm"}[noun]
    nouns = {m for m in modules if m.startswith("ppec.cli.")} - {
        "ppec.cli.main", "ppec.cli.common", "ppec.cli.output", "ppec.cli.options",
        "ppec.cli.run", "ppec.cli.entry"}
    assert nouns - {f"ppec.cli.{own}_verbs"} == {f"ppec.cli.{own}"}   # verbs: the noun's own
    assert "ppec.operator.agentsync" not in modules and "ppec.service" not in modules


def test_create_on_a_named_host_decides_without_numpy(cli: Cli, test_agent: Agent,
                                                      tmp_path: Path) -> None:
    """`vm create --host` is decided by the placement filters alone (numpy is ~130 ms of
    CPU); the same create without --host over two hosts builds the index and loads it."""
    for name in ("t1", "t2"):
        cli.ok("host", "add", name, "--address", "local", "--socket", str(test_agent.socket))
    out = tmp_path / "create.json"
    args = ["vm", "create", "web-1", "--cpus", "1", "--memory", "256M", "--disk", "1G"]
    done = subprocess.run([sys.executable, "-c", WRAPPER, str(out), *args, "--host", "t1"],
                          env=cli.env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "numpy" not in {m.split(".")[0] for m in json.loads(out.read_text())}
    assert cli.store_vms() == ["web-1"]
    done = subprocess.run([sys.executable, "-c", WRAPPER, str(out), *args[:2], "web-2",
                           *args[3:]], env=cli.env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "numpy" in {m.split(".")[0] for m in json.loads(out.read_text())}
