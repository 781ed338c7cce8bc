"""Issue 16: an attacker who can write the operator store (the SQLite file) but not the
hosts' ledgers nor the operators' keys cannot truncate, rewrite, reorder or roll back the
audit chain without `ppec audit verify` saying so. Real parts: an agent on libvirt's test
driver enforcing maker-checker, three approved VM deletes executed end to end through the
CLI, then direct SQL on the store file only."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ppec.operator.audit import _hash
from tests.policy import as_, install_policy, make_people
from tests.realparts import Agent, Cli

COLS = ("seq", "at", "actor", "action", "request_id", "detail", "prev", "hash")


@dataclass
class World:
    cli: Cli
    agent: Agent
    pristine: Path       # the store after three approved deletes (12 entries)
    backup: Path         # the store after two of them (8 entries)


def _copy(src: Path, dst: Path) -> None:
    """A consistent copy of an SQLite file (its WAL included), replacing ``dst``."""
    for suffix in ("-wal", "-shm"):
        Path(f"{dst}{suffix}").unlink(missing_ok=True)
    dst.unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(src)) as a, \
            contextlib.closing(sqlite3.connect(dst)) as b:
        a.backup(b)


def _delete_approved(cli: Cli, people: dict[str, Path], vm: str) -> None:
    asked = as_(cli, people["alice"], "vm", "delete", vm, "-o", "json")
    assert asked.returncode == 4, asked.stderr  # type: ignore[attr-defined]
    rid = str(json.loads(asked.stdout)["id"])  # type: ignore[attr-defined]
    done = as_(cli, people["bob"], "request", "approve", rid)
    assert done.returncode == 0, done.stderr  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("anchors")
    cli = Cli(root / "operator")
    people = make_people(root)
    approvers = install_policy(cli, root, people)
    agent = Agent(root / "agent", host="t1", extra={"approvers_file": str(approvers)}).start()
    try:
        cli.ok("host", "add", "t1", "--address", "local", "--socket", str(agent.socket))
        for vm in ("web", "db", "app"):
            cli.ok("vm", "create", vm, "--flavor", "tiny")
        _delete_approved(cli, people, "web")
        _delete_approved(cli, people, "db")
        backup = root / "backup.db"
        _copy(cli.db, backup)
        _delete_approved(cli, people, "app")
        pristine = root / "pristine.db"
        _copy(cli.db, pristine)
        yield World(cli, agent, pristine, backup)
    finally:
        agent.kill()


@pytest.fixture
def cli(world: World) -> Cli:
    """The world's CLI on a fresh copy of its untouched store."""
    _copy(world.pristine, world.cli.db)
    return world.cli


def verify(cli: Cli) -> tuple[int, dict[str, Any]]:
    done = cli.run("audit", "verify", "-o", "json")
    return done.returncode, json.loads(done.stdout)


def _rewrite(cli: Cli, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    """Apply ``change`` to the whole log, then renumber and recompute every hash with the
    store's own function: a chain that verifies on its own."""
    with contextlib.closing(sqlite3.connect(cli.db)) as db, db:
        rows = [dict(zip(COLS, r, strict=True))
                for r in db.execute(f"SELECT {', '.join(COLS)} FROM audit ORDER BY seq")]
        prev = "0" * 64
        log = change(rows)
        for seq, e in enumerate(log, start=1):
            e["seq"], e["prev"] = seq, prev
            e["hash"] = prev = _hash(e)
        db.execute("DELETE FROM audit")
        db.executemany(f"INSERT INTO audit ({', '.join(COLS)}) VALUES "
                       f"({', '.join('?' * len(COLS))})", [[e[k] for k in COLS] for e in log])


def _sql(cli: Cli, statement: str) -> None:
    with contextlib.closing(sqlite3.connect(cli.db)) as db, db:
        db.execute(statement)


def test_a_clean_history_verifies_against_the_hosts_anchors(cli: Cli) -> None:
    code, doc = verify(cli)
    assert code == 0, doc
    # Each execution anchored its own "execute" entry: 3, 7 and 11 of 12.
    assert doc == {"entries": 12, "intact": True, "problem": None,
                   "anchors": {"t1": {"checked": 3, "ok": True}}}
    done = cli.ok("audit", "verify")
    assert "audit log intact: 12 entries, 3 anchors on 1 host(s)" in done.stdout


def test_the_last_entry_deleted_is_missing_from_its_request(cli: Cli) -> None:
    _sql(cli, "DELETE FROM audit WHERE seq = 12")
    code, doc = verify(cli)
    assert code == 1 and doc["intact"] is False
    assert doc["problem"]["kind"] == "missing" and doc["problem"]["request_id"] == 3
    assert "request 3 is executed but the audit log has no 'executed' entry" \
        in doc["problem"]["message"]
    done = cli.run("audit", "verify")
    assert done.returncode == 1 and "request 3 is executed" in done.stderr


@pytest.mark.parametrize(("keep", "seq"), [(2, 3), (0, 3), (8, 11)],
                         ids=["last-ten", "all", "last-four"])
def test_truncation_is_caught_by_the_hosts_anchors(cli: Cli, keep: int, seq: int) -> None:
    _sql(cli, f"DELETE FROM audit WHERE seq > {keep}")
    code, doc = verify(cli)
    assert code == 1 and doc["entries"] == keep and doc["anchors"]["t1"]["ok"] is False
    assert doc["problem"]["kind"] == "truncated" and doc["problem"]["seq"] == seq
    assert f"host t1 anchored audit entry {seq}" in doc["problem"]["message"]
    assert f"the chain ends at entry {keep}" in doc["problem"]["message"]


def test_an_edit_with_every_later_hash_recomputed(cli: Cli) -> None:
    def forge(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
        log[5]["actor"] = "mallory"      # entry 6: mallory approved the second delete
        return log
    _rewrite(cli, forge)
    assert cli.run("audit", "list").returncode == 0
    code, doc = verify(cli)
    assert code == 1 and doc["problem"]["kind"] == "rewritten"
    assert doc["problem"]["seq"] == 7    # the first anchored entry at or after the edit
    assert "audit entry 7 (or one before it) is not the one host t1 anchored" \
        in doc["problem"]["message"]


def test_a_reorder_with_every_hash_recomputed(cli: Cli) -> None:
    def swap(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
        log[0], log[1] = log[1], log[0]  # approved before it was requested
        return log
    _rewrite(cli, swap)
    code, doc = verify(cli)
    assert code == 1 and doc["problem"]["kind"] == "rewritten" and doc["problem"]["seq"] == 3


def test_a_store_restored_from_an_older_backup(cli: Cli, world: World) -> None:
    _copy(world.backup, cli.db)
    code, doc = verify(cli)
    assert code == 1 and doc["entries"] == 8
    assert doc["problem"]["kind"] == "truncated" and doc["problem"]["seq"] == 11
    assert "restored from an older backup" in doc["problem"]["message"]


def test_a_request_whose_state_has_no_trail(cli: Cli) -> None:
    # Request 2 marked rejected in the store: the log never saw a rejection.
    _sql(cli, "UPDATE requests SET state = 'rejected' WHERE id = 2")
    code, doc = verify(cli)
    assert code == 1 and doc["problem"] == {
        "kind": "missing", "request_id": 2, "actions": ["reject"],
        "message": "request 2 is rejected but the audit log has no 'reject' entry for it"}


def test_a_down_host_is_reported_not_ignored(cli: Cli, tmp_path: Path) -> None:
    cli.ok("host", "add", "t2", "--address", "local", "--socket", str(tmp_path / "gone.sock"),
           "--no-check")
    code, doc = verify(cli)
    assert code == 5, doc
    assert doc["intact"] is True and doc["anchors"]["t1"] == {"checked": 3, "ok": True}
    assert doc["anchors"]["t2"]["ok"] is False and doc["anchors"]["t2"]["checked"] == 0
    assert doc["anchors"]["t2"]["error"]
    done = cli.run("audit", "verify")
    assert done.returncode == 5
    assert "t2: anchors not checked" in done.stderr
    assert "1 host(s) not checked" in done.stdout
    # With a problem as well, the problem decides: exit 1.
    _sql(cli, "DELETE FROM audit")
    assert verify(cli)[0] == 1
