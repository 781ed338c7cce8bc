"""Maker-checker: the forgery matrix at the CLI and again at the agent, the happy path over
SSH, and the audit chain. Identities are real SSH keys made with ssh-keygen."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from ppec.core.signing import (
    PURPOSE_APPROVE,
    PURPOSE_REQUEST,
    Approvers,
    Forbidden,
    check_approval,
    digest,
    new_payload,
    sign,
)
from ppec.wire import protocol
from tests.netparts import Lan
from tests.policy import as_, install_policy, make_people, policy_toml, pub
from tests.realparts import Agent, Cli, make_key


@pytest.fixture
def people(tmp_path: Path) -> dict[str, Path]:
    return make_people(tmp_path)


@pytest.fixture
def mc(cli: Cli, tmp_path: Path, people: dict[str, Path], blue_lan: Lan) -> Agent:
    """An operator config with policy, and an agent enforcing the same approvers file
    (its VRF blue on a real bridge, for the tests whose host is in that VRF)."""
    approvers = install_policy(cli, tmp_path, people)
    agent = Agent(tmp_path / "agent", host="t1",
                  extra={"approvers_file": str(approvers),
                         "networks": {"blue": {"bridge": blue_lan.bridge}}}).start()
    cli.ok("host", "add", "t1", "--address", "local", "--socket", str(agent.socket))
    cli.ok("vm", "create", "web", "--flavor", "tiny")
    yield agent  # type: ignore[misc]
    agent.kill()


def request_delete(cli: Cli, people: dict[str, Path]) -> int:
    done = as_(cli, people["alice"], "vm", "delete", "web", "-o", "json")
    assert done.returncode == 4, done.stderr  # type: ignore[attr-defined]
    return int(json.loads(done.stdout)["id"])  # type: ignore[attr-defined]


def test_happy_path_maker_checker_execute_and_audit(cli: Cli, mc: Agent,
                                                    people: dict[str, Path]) -> None:
    rid = request_delete(cli, people)
    assert "web" in mc.ledger_rows()                   # nothing happened yet
    pending = json.loads(cli.ok("request", "list", "--state", "pending", "-o", "json").stdout)
    assert [(r["id"], r["maker"], r["operation"]) for r in pending["requests"]] == [
        (rid, "alice", "vm.delete")]
    done = as_(cli, people["bob"], "request", "approve", str(rid), "-o", "json")
    assert done.returncode == 0, done.stderr  # type: ignore[attr-defined]
    assert json.loads(done.stdout)["state"] == "executed"  # type: ignore[attr-defined]
    assert mc.ledger_rows() == {} and cli.store_vms() == []
    log = json.loads(cli.ok("audit", "list", "-o", "json").stdout)["entries"]
    assert [(e["actor"], e["action"]) for e in log] == [
        ("alice", "request"), ("bob", "approve"), ("bob", "execute"), ("bob", "executed")]
    assert "audit log intact: 4 entries" in cli.ok("audit", "verify").stdout


@pytest.mark.parametrize("forgery", ["self", "fake-user", "no-role", "stranger"])
def test_approval_forgeries_at_the_cli(cli: Cli, mc: Agent, people: dict[str, Path],
                                       tmp_path: Path, forgery: str) -> None:
    rid = request_delete(cli, people)
    if forgery == "self":
        done = as_(cli, people["alice"], "request", "approve", str(rid))
        words = "alice made this request and cannot approve it"
    elif forgery == "fake-user":   # alice pretends to be bob through the environment
        done = as_(cli, people["alice"], "request", "approve", str(rid), USER="bob",
                   LOGNAME="bob")
        words = "alice made this request and cannot approve it"
    elif forgery == "no-role":
        done = as_(cli, people["carol"], "request", "approve", str(rid))
        words = "carol (roles: netops) may not approve vm requests (needs: sre)"
    else:
        stranger = tmp_path / "stranger"
        make_key(stranger)
        done = as_(cli, stranger, "request", "approve", str(rid))
        words = "belongs to a registered operator"
    assert done.returncode == 1, done.stdout  # type: ignore[attr-defined]
    assert words in done.stderr  # type: ignore[attr-defined]
    assert "web" in mc.ledger_rows()
    state = json.loads(cli.ok("request", "show", str(rid), "-o", "json").stdout)["state"]
    assert state == "pending"


def test_same_key_under_a_second_name(cli: Cli, mc: Agent, people: dict[str, Path],
                                      tmp_path: Path) -> None:
    config = Path(cli.env["PPEC_CONFIG"])
    config.write_text(policy_toml(people, f'[operators.mallory]\nkey = "{pub(people["alice"])}"'
                                          f'\nroles = ["sre"]\n'))
    done = as_(cli, people["alice"], "vm", "delete", "web")
    assert done.returncode == 1  # type: ignore[attr-defined]
    assert "is registered for alice, mallory: one key, one person" in done.stderr  # type: ignore[attr-defined]


def _store(cli: Cli) -> sqlite3.Connection:
    return sqlite3.connect(cli.db)


def test_replayed_edited_expired_and_twice_at_the_cli(cli: Cli, mc: Agent,
                                                      people: dict[str, Path]) -> None:
    # Two requests; bob's approval of the first is grafted onto the second in the store.
    first = request_delete(cli, people)
    cli.ok("vm", "create", "db", "--flavor", "tiny")
    second_done = as_(cli, people["alice"], "vm", "delete", "db", "-o", "json")
    second = int(json.loads(second_done.stdout)["id"])  # type: ignore[attr-defined]
    as_(cli, people["bob"], "request", "approve", str(first))
    with contextlib.closing(_store(cli)) as db, db:
        checker, sig = db.execute("SELECT checker, checker_sig FROM requests WHERE id=?",
                                  (first,)).fetchone()
        db.execute("UPDATE requests SET state='approved', checker=?, checker_sig=? WHERE id=?",
                   (checker, sig, second))
    done = cli.run("request", "execute", str(second))
    assert done.returncode == 1
    assert "bob's approval signature does not match this request" in done.stderr
    assert "db" in mc.ledger_rows()
    # Executed twice: the first request already ran.
    again = cli.run("request", "execute", str(first))
    assert again.returncode == 1 and "is executed, not approved" in again.stderr
    # Edited after approval: point the approved second request at another VM.
    with contextlib.closing(_store(cli)) as db, db:
        payload = json.loads(db.execute("SELECT payload FROM requests WHERE id=?",
                                        (second,)).fetchone()[0])
        payload["resource"] = "other"
        db.execute("UPDATE requests SET payload=? WHERE id=?", (json.dumps(payload), second))
    edited = cli.run("request", "execute", str(second))
    assert edited.returncode == 1
    assert "the maker's signature does not match the request (was it edited?)" in edited.stderr


def test_expired_request_cannot_be_approved(cli: Cli, mc: Agent, people: dict[str, Path]) -> None:
    config = Path(cli.env["PPEC_CONFIG"])
    config.write_text("request_ttl = 1\n" + policy_toml(people))
    rid = request_delete(cli, people)
    time.sleep(1.5)
    done = as_(cli, people["bob"], "request", "approve", str(rid))
    assert done.returncode == 1 and "request expired" in done.stderr  # type: ignore[attr-defined]
    assert "web" in mc.ledger_rows()


def test_reject_and_cancel(cli: Cli, mc: Agent, people: dict[str, Path]) -> None:
    rid = request_delete(cli, people)
    assert as_(cli, people["bob"], "request", "cancel", str(rid)).returncode == 1  # type: ignore[attr-defined]
    assert as_(cli, people["bob"], "request", "reject", str(rid), "--reason",
               "not today").returncode == 0  # type: ignore[attr-defined]
    assert as_(cli, people["bob"], "request", "approve", str(rid)).returncode == 1  # type: ignore[attr-defined]
    rid2 = request_delete(cli, people)
    assert as_(cli, people["alice"], "request", "cancel", str(rid2)).returncode == 0  # type: ignore[attr-defined]
    actions = [e["action"] for e in json.loads(cli.ok("audit", "list", "-o",
                                                      "json").stdout)["entries"]]
    assert actions == ["request", "reject", "request", "cancel"]
    assert "web" in mc.ledger_rows()


# -- the agent refuses on its own, whatever a client sends ------------------------------


def _send(agent: Agent, approval: object, method: str = "vm.delete",
          **params: object) -> dict[str, object]:
    msg = protocol.request(1, method, params or {"name": "web"})
    if approval is not None:
        msg["approval"] = approval
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(agent.socket))
        s.sendall(protocol.encode(msg))
        return json.loads(s.makefile("rb").readline())


def _key(path: Path) -> object:
    import paramiko
    return paramiko.PKey.from_path(str(path))


def _envelope(people: dict[str, Path], maker: str, checker: str, signer: str | None = None,
              operation: str = "vm.delete", resource: str = "web",
              params: dict[str, object] | None = None, **changes: object) -> dict[str, object]:
    appr = Approvers.from_mapping(__import__("tomllib").loads(policy_toml(people)))
    op = appr.named(maker)
    assert op is not None
    payload = new_payload(operation, operation.split(".")[0], resource, op, params, host="t1")
    payload.update(changes.pop("before", {}))  # type: ignore[arg-type]
    maker_sig = sign(_key(people[maker]), PURPOSE_REQUEST, digest(payload))
    checker_sig = sign(_key(people[signer or checker]), PURPOSE_APPROVE, digest(payload))
    payload.update(changes.pop("after", {}))  # type: ignore[arg-type]
    return {"payload": payload, "maker_sig": maker_sig, "checker": checker,
            "checker_sig": checker_sig}


@pytest.mark.parametrize(("case", "words"), [
    ("none", "needs an approved request on this host"),
    ("self", "alice made this request and cannot approve it"),
    ("no-role", "carol (roles: netops) may not approve vm requests"),
    ("other-vm", "approval is for vm other, not web"),
    ("other-host", "approval is for host t9, not t1"),
    ("expired", "request expired"),
    ("edited", "the maker's signature does not match the request"),
    ("forged-checker", "bob's approval signature does not match"),
])
def test_forgeries_sent_straight_to_the_agent(mc: Agent, people: dict[str, Path], case: str,
                                              words: str) -> None:
    env: object
    if case == "none":
        env = None
    elif case == "self":
        env = _envelope(people, "alice", "alice")
    elif case == "no-role":
        env = _envelope(people, "alice", "carol")
    elif case == "other-vm":
        env = _envelope(people, "alice", "bob", before={"resource": "other"})
    elif case == "other-host":
        env = _envelope(people, "alice", "bob", before={"host": "t9"})
    elif case == "expired":
        env = _envelope(people, "alice", "bob", before={"expires": time.time() - 5})
    elif case == "edited":
        env = _envelope(people, "alice", "bob", after={"params": {"force": True}})
    else:   # alice signs bob's part herself
        env = _envelope(people, "alice", "bob", signer="alice")
    reply = _send(mc, env)
    assert reply["ok"] is False
    assert reply["error"]["code"] == "FORBIDDEN", reply  # type: ignore[index]
    assert words in reply["error"]["message"], reply  # type: ignore[index]
    assert "web" in mc.ledger_rows()


@pytest.mark.parametrize(("case", "words"), [
    ("none", "disk.detach needs an approved request on this host"),
    ("other-target", "approval is for disk web/vdb, not web/vdc"),
    ("keep-dropped", "the approved request has keep_volume=True, this call keep_volume=False"),
    ("vm-approval", "approval is for vm.delete, not disk.detach"),
    ("other-volume", "the approved request has path='/v/a.qcow2', this call path='/v/b.qcow2'"),
])
def test_disk_detach_approvals_bind_the_target_and_keep_volume(
        mc: Agent, people: dict[str, Path], case: str, words: str) -> None:
    """The agent checks a detach's approval before touching anything: an approval to detach
    vdb and keep its volume is not one to delete vdc's, or vdb's."""
    keep = {"keep_volume": True}
    env: object = None
    call: dict[str, object] = {"name": "web", "target": "vdb", "keep_volume": False}
    if case == "other-target":
        env = _envelope(people, "alice", "bob", operation="disk.detach", resource="web/vdb",
                        params=keep)
        call = {"name": "web", "target": "vdc", "keep_volume": True}
    elif case == "keep-dropped":
        env = _envelope(people, "alice", "bob", operation="disk.detach", resource="web/vdb",
                        params=keep)
    elif case == "vm-approval":
        env = _envelope(people, "alice", "bob")
    elif case == "other-volume":
        env = _envelope(people, "alice", "bob", operation="disk.detach", resource="web/vdb",
                        params={"keep_volume": False, "path": "/v/a.qcow2"})
        call = {**call, "path": "/v/b.qcow2"}
    reply = _send(mc, env, "disk.detach", **call)
    assert reply["ok"] is False
    assert reply["error"]["code"] == "FORBIDDEN", reply  # type: ignore[index]
    assert words in reply["error"]["message"], reply  # type: ignore[index]


def test_the_agent_executes_an_approval_once(mc: Agent, people: dict[str, Path],
                                             cli: Cli) -> None:
    env = _envelope(people, "alice", "bob")
    assert _send(mc, env)["ok"] is True
    assert mc.ledger_rows() == {}
    with contextlib.closing(_store(cli)) as db, db:   # the CLI was bypassed on purpose
        db.execute("DELETE FROM vms WHERE name='web'")
    cli.ok("vm", "create", "web", "--flavor", "tiny", "--host", "t1")
    replay = _send(mc, env)
    assert replay["ok"] is False
    assert "was already executed on t1" in replay["error"]["message"]  # type: ignore[index]
    assert "web" in mc.ledger_rows()


def test_library_refuses_the_same_key_under_two_names(people: dict[str, Path]) -> None:
    appr = Approvers.from_mapping(__import__("tomllib").loads(policy_toml(
        people, f'[operators.mallory]\nkey = "{pub(people["alice"])}"\nroles = ["sre"]\n')))
    alice = appr.named("alice")
    assert alice is not None
    payload = new_payload("vm.delete", "vm", "web", alice, host="t1")
    maker_sig = sign(_key(people["alice"]), PURPOSE_REQUEST, digest(payload))
    checker_sig = sign(_key(people["alice"]), PURPOSE_APPROVE, digest(payload))
    with pytest.raises(Forbidden, match="signs with the maker's key"):
        check_approval(appr, payload, maker_sig, "mallory", checker_sig)


def test_audit_tampering_is_found(cli: Cli, mc: Agent, people: dict[str, Path]) -> None:
    rid = request_delete(cli, people)
    as_(cli, people["bob"], "request", "approve", str(rid))
    cli.ok("audit", "verify")
    with contextlib.closing(_store(cli)) as db, db:
        db.execute("UPDATE audit SET actor='mallory' WHERE seq=2")
    done = cli.run("audit", "verify")
    assert done.returncode == 1 and "audit entry 2 was altered" in done.stderr
    with contextlib.closing(_store(cli)) as db, db:
        db.execute("UPDATE audit SET actor='bob' WHERE seq=2")
        row3 = db.execute("SELECT * FROM audit WHERE seq=3").fetchone()
        db.execute("DELETE FROM audit WHERE seq=3")
    done = cli.run("audit", "verify")
    assert done.returncode == 1 and "audit entry 3 is missing" in done.stderr
    with contextlib.closing(_store(cli)) as db, db:
        db.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row3)
        a, b = (db.execute("SELECT * FROM audit WHERE seq=?", (n,)).fetchone()
                for n in (2, 3))
        db.execute("DELETE FROM audit WHERE seq IN (2, 3)")
        db.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (2, *b[1:]))
        db.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (3, *a[1:]))
    done = cli.run("audit", "verify")
    assert done.returncode == 1 and "audit entry 2 does not follow entry 1" in done.stderr


def test_the_whole_flow_on_each_store_backend(cli: Cli, mc: Agent, people: dict[str, Path],
                                              store_url: str) -> None:
    """The same CLI flow with the store on SQLite and on PostgreSQL (PPEC_DB)."""
    cli.env["PPEC_DB"] = store_url
    cli.ok("host", "add", "t1", "--address", "local", "--socket", str(mc.socket),
           "--vrf", "blue")
    cli.ok("ip", "pool", "add", "p1", "--vrf", "blue", "--cidr", "10.9.0.0/29")
    vm = json.loads(cli.ok("vm", "create", "pgvm", "--flavor", "tiny", "-o", "json").stdout)
    assert vm["ip"]["address"] == "10.9.0.1"
    rid = json.loads(as_(cli, people["alice"], "vm", "delete", "pgvm",  # type: ignore[attr-defined]
                         "-o", "json").stdout)["id"]
    done = as_(cli, people["bob"], "request", "approve", str(rid))
    assert done.returncode == 0, done.stderr  # type: ignore[attr-defined]
    assert "pgvm" not in mc.ledger_rows()
    assert json.loads(cli.ok("ip", "list", "-o", "json").stdout)["addresses"] == []
    assert "audit log intact: 4 entries" in cli.ok("audit", "verify").stdout


def test_agent_refuses_the_same_key_under_a_second_name(tmp_path: Path,
                                                        people: dict[str, Path]) -> None:
    """Even when the host's approvers file itself lists one key under two names."""
    approvers = tmp_path / "approvers-mallory.toml"
    approvers.write_text(policy_toml(people, f'[operators.mallory]\nkey = '
                                             f'"{pub(people["alice"])}"\nroles = ["sre"]\n'))
    approvers.chmod(0o644)
    agent = Agent(tmp_path / "agent2", host="t1",
                  extra={"approvers_file": str(approvers)}).start()
    try:
        made = _send_create(agent)
        assert made["ok"] is True, made
        reply = _send(agent, _envelope(people, "alice", "mallory", signer="alice"))
        assert reply["ok"] is False
        assert "signs with the maker's key" in reply["error"]["message"]  # type: ignore[index]
        assert "web" in agent.ledger_rows()
    finally:
        agent.kill()


def test_agent_refuses_an_approvers_file_others_can_write(tmp_path: Path,
                                                          people: dict[str, Path]) -> None:
    approvers = tmp_path / "loose.toml"
    approvers.write_text(policy_toml(people))
    approvers.chmod(0o666)
    agent = Agent(tmp_path / "agent3", host="t1", extra={"approvers_file": str(approvers)})
    with pytest.raises(AssertionError, match="must be owned by root and writable by root only"):
        agent.start(timeout=20)


def _send_create(agent: Agent) -> dict[str, object]:
    msg = protocol.request(1, "vm.create", {"name": "web", "vcpus": 1, "memory_mib": 64,
                                            "disk_bytes": 1 << 24})
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(agent.socket))
        s.sendall(protocol.encode(msg))
        return json.loads(s.makefile("rb").readline())


@pytest.mark.parametrize(("toml", "words"), [
    ('[approval.vm]\noperations = "delete"\napprovers = ["sre"]\n',
     "approval.vm.operations must be a list of strings"),
    ('[approval.vm]\noperations = ["delete"]\napprovers = "admins"\n',
     "approval.vm.approvers must be a list of strings"),
    ('[operators.x]\nkey = "ssh-ed25519 AAAA"\nroles = "ops"\n',
     "operators.x.roles must be a list"),
])
def test_policy_values_must_be_lists(toml: str, words: str) -> None:
    import tomllib

    from ppec.core.errors import BadInput
    with pytest.raises(BadInput, match=words):
        Approvers.from_mapping(tomllib.loads(toml))


def test_an_operation_cannot_borrow_another_types_approvers(people: dict[str, Path]) -> None:
    """A vm.delete dressed as an ip request, approved by an ip-only approver, is refused."""
    import tomllib
    appr = Approvers.from_mapping(tomllib.loads(policy_toml(people)))
    alice = appr.named("alice")
    assert alice is not None
    payload = new_payload("vm.delete", "ip", "web", alice, host="t1")
    maker_sig = sign(_key(people["alice"]), PURPOSE_REQUEST, digest(payload))
    checker_sig = sign(_key(people["carol"]), PURPOSE_APPROVE, digest(payload))
    with pytest.raises(Forbidden, match="does not match operation"):
        check_approval(appr, payload, maker_sig, "carol", checker_sig, operation="vm.delete")


def test_a_state_change_and_its_audit_entry_commit_together(cli: Cli, mc: Agent,
                                                            people: dict[str, Path]) -> None:
    """When the audit entry cannot be written, the change it records does not happen."""
    rid = request_delete(cli, people)
    with contextlib.closing(_store(cli)) as db, db:
        db.execute("CREATE TRIGGER no_audit BEFORE INSERT ON audit "
                   "BEGIN SELECT RAISE(ABORT, 'audit disk full'); END")
    done = as_(cli, people["bob"], "request", "reject", str(rid), "--reason", "no")
    assert done.returncode != 0  # type: ignore[attr-defined]
    assert "audit disk full" in done.stderr  # type: ignore[attr-defined]
    made = as_(cli, people["alice"], "vm", "delete", "web")
    assert made.returncode != 0  # type: ignore[attr-defined]
    with contextlib.closing(_store(cli)) as db:
        assert db.execute("SELECT id, state FROM requests").fetchall() == [(rid, "pending")]
        db.execute("DROP TRIGGER no_audit")
        db.commit()
    assert "web" in mc.ledger_rows()
    assert "audit log intact: 1 entries" in cli.ok("audit", "verify").stdout



def test_ip_owner_updates_wait_for_netops_and_name_the_owner_they_saw(
        cli: Cli, mc: Agent, people: dict[str, Path]) -> None:
    cli.ok("ip", "pool", "add", "p1", "--vrf", "blue", "--cidr", "10.9.0.0/24")
    cli.ok("ip", "allocate", "--vrf", "blue", "--address", "10.9.0.5", "--owner", "lb-old")
    first = as_(cli, people["alice"], "ip", "update", "10.9.0.5", "--vrf", "blue",
                "--owner", "lb-new", "-o", "json")
    second = as_(cli, people["alice"], "ip", "update", "10.9.0.5", "--vrf", "blue",
                 "--owner", "lb-other", "-o", "json")
    assert first.returncode == 4 and second.returncode == 4  # type: ignore[attr-defined]
    ids = [json.loads(r.stdout)["id"] for r in (first, second)]  # type: ignore[attr-defined]
    owner = {a["address"]: a["owner"] for a in json.loads(
        cli.ok("ip", "list", "-o", "json").stdout)["addresses"]}
    assert owner["10.9.0.5"] == "lb-old"                 # nothing changed yet
    refused = as_(cli, people["bob"], "request", "approve", str(ids[0]))
    assert refused.returncode == 1  # type: ignore[attr-defined]
    assert "may not approve ip requests (needs: netops)" in refused.stderr  # type: ignore[attr-defined]
    done = as_(cli, people["carol"], "request", "approve", str(ids[0]), "-o", "json")
    assert done.returncode == 0, done.stderr  # type: ignore[attr-defined]
    assert json.loads(done.stdout)["result"]["previous_owner"] == "lb-old"  # type: ignore[attr-defined]
    # The second request was made against lb-old; the owner is lb-new now: refused.
    stale = as_(cli, people["carol"], "request", "approve", str(ids[1]))
    assert stale.returncode == 1  # type: ignore[attr-defined]
    assert "is now owned by 'lb-new', not 'lb-old'" in stale.stderr  # type: ignore[attr-defined]
    owner = {a["address"]: a["owner"] for a in json.loads(
        cli.ok("ip", "list", "-o", "json").stdout)["addresses"]}
    assert owner["10.9.0.5"] == "lb-new"
    states = {r["id"]: r["state"] for r in json.loads(
        cli.ok("request", "list", "-o", "json").stdout)["requests"]}
    assert (states[ids[0]], states[ids[1]]) == ("executed", "failed")
