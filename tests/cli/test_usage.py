"""Bad usage typer finds while parsing comes out like every other bad input: one line
`ppec: error: …` (one JSON line with -o json), exit 2, nothing on stdout. And the global
options reach every command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.policy import as_, install_policy, make_people
from tests.realparts import Cli

CASES = [
    (["vm", "create", "x", "--cpus", "2000"],
     "Invalid value for '--cpus': 2000 is not in the range 1<=x<=1024. "
     "(see `ppec vm create --help`)"),
    (["vm", "create", "x", "--flavor", "tiny", "--numa", "foo"],
     "Invalid value for '--numa': 'foo' is not one of 'shared', 'dedicated'. "
     "(see `ppec vm create --help`)"),
    (["vm", "create"], "Missing argument 'name'. (see `ppec vm create --help`)"),
    (["vm", "list", "--bogus"],
     "No such option: --bogus (Possible options: --host) (see `ppec vm list --help`)"),
    (["place", "--cpus", "0", "--memory", "1G"],
     "Invalid value for '--cpus': 0 is not in the range 1<=x<=1024. "
     "(see `ppec place --help`)"),
    (["host", "add", "h1"], "Missing option '--address'. (see `ppec host add --help`)"),
]


@pytest.mark.parametrize(("args", "message"), CASES)
def test_usage_errors_are_one_ppec_line(cli: Cli, args: list[str], message: str) -> None:
    done = cli.run(*args)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"ppec: error: {message}\n"


@pytest.mark.parametrize(("args", "message"), CASES)
@pytest.mark.parametrize("spelling", [["-o", "json"], ["--output=json"], ["-ojson"]])
def test_usage_errors_are_one_json_line_with_o_json(cli: Cli, args: list[str], message: str,
                                                    spelling: list[str]) -> None:
    done = cli.run(*args, *spelling)
    assert (done.returncode, done.stdout) == (2, "")
    [line] = done.stderr.splitlines()
    assert json.loads(line) == {"error": {"code": "BAD_USAGE", "message": message,
                                          "host": None, "details": {}}}


def test_a_bad_output_format_is_named(cli: Cli) -> None:
    done = cli.run("vm", "list", "-o", "yaml")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("ppec: error: Invalid value for '-o' / '--output': 'yaml' is not "
                           "one of 'table', 'json', 'csv'. (see `ppec vm list --help`)\n")


def test_a_group_without_its_command_prints_its_help(cli: Cli) -> None:
    done = cli.run("vm")
    assert done.returncode == 2
    assert done.stderr.startswith("Usage: ppec vm [OPTIONS] COMMAND [ARGS]...")


def test_config_show_names_the_db_given(cli: Cli, tmp_path: Path) -> None:
    db = tmp_path / "elsewhere.db"
    doc = json.loads(cli.ok("--db", str(db), "config", "show", "-o", "json").stdout)
    assert doc["db"] == str(db)
    assert not db.exists()   # showing the config opens no store
    cli.env["PPEC_DB"] = str(tmp_path / "env.db")
    assert json.loads(cli.ok("config", "show", "-o", "json").stdout)["db"] == str(
        tmp_path / "env.db")


def test_config_show_has_fresh_for_and_refuses_a_bad_one(cli: Cli, tmp_path: Path) -> None:
    doc = json.loads(cli.ok("config", "show", "-o", "json").stdout)
    assert doc["placement"]["fresh_for"] == 5.0
    assert "fresh_for = 5.0" in cli.ok("config", "show").stdout
    config = tmp_path / "config.toml"
    cli.env["PPEC_CONFIG"] = str(config)
    config.write_text('[placement]\nfresh_for = "2m"\n')
    assert json.loads(cli.ok("config", "show", "-o", "json").stdout)["placement"][
        "fresh_for"] == 120.0
    config.write_text('[placement]\nfresh_for = "soon"\n')
    for args in (("config", "show"), ("vm", "create", "x", "--flavor", "tiny")):
        done = cli.run(*args)
        assert done.returncode == 2, done
        assert done.stderr.startswith("ppec: error: invalid [placement] fresh_for in config ")
        assert len(done.stderr.splitlines()) == 1


def test_a_host_failure_beside_requests_keeps_its_own_code(cli: Cli, tmp_path: Path) -> None:
    """`agent sync` under policy: a host it cannot compare is reported with its code (the
    agent unreachable), not as if placement had found no capacity."""
    people = make_people(tmp_path)
    install_policy(cli, tmp_path, people,
                   '[approval.agent]\noperations = ["update"]\napprovers = ["sre"]\n')
    cli.ok("host", "add", "gone", "--address", "local", "--socket", str(tmp_path / "no.sock"),
           "--no-check")
    done = as_(cli, people["alice"], "agent", "sync", "-o", "json")
    assert done.returncode == 1, done.stderr  # type: ignore[attr-defined]
    [line] = done.stderr.splitlines()  # type: ignore[attr-defined]
    error = json.loads(line)["error"]
    assert error["code"] == "AGENT_UNREACHABLE"
    assert error["message"].startswith("gone: agent not running: no socket at")
