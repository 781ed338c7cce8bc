"""Malformed approval envelopes sent straight to a real agent: refused with the reason,
never an internal error (issue 16). The agent runs on libvirt's test driver and enforces
a real approvers file; signatures are made with real SSH keys."""

from __future__ import annotations

import copy
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppec.core.signing import (
    ENVELOPE_FIELDS,
    ENVELOPE_OPTIONAL,
    PAYLOAD_FIELDS,
    PAYLOAD_OPTIONAL,
    PURPOSE_APPROVE,
    PURPOSE_REQUEST,
    Approvers,
    Operator,
    digest,
    new_payload,
    sign,
)
from ppec.wire import protocol
from tests.realparts import Agent, make_key


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("keys")
    out = {who: where / f"{who}_ed25519" for who in ("alice", "bob")}
    for path in out.values():
        make_key(path)
    return out


@pytest.fixture(scope="module")
def approvers(keys: dict[str, Path]) -> Approvers:
    def pub(who: str) -> str:
        return " ".join(keys[who].with_suffix(".pub").read_text().split()[:2])
    return Approvers.from_mapping({
        "operators": {who: {"key": pub(who), "roles": ["sre"]} for who in keys},
        "approval": {"vm": {"operations": ["delete"], "approvers": ["sre"]}}})


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, approvers: Approvers) -> Iterator[Agent]:
    root = tmp_path_factory.mktemp("mc")
    path = root / "approvers.toml"
    path.write_bytes(tomli_w.dumps(approvers.to_toml_mapping()).encode())
    path.chmod(0o644)
    agent = Agent(root / "agent", host="t1", extra={"approvers_file": str(path)}).start()
    yield agent
    agent.kill()


def _signed(keys: dict[str, Path], approvers: Approvers) -> dict[str, Any]:
    """A valid approval of ``vm.delete web`` on t1, alice the maker, bob the checker."""
    import paramiko
    alice = approvers.named("alice")
    assert isinstance(alice, Operator)
    payload = new_payload("vm.delete", "vm", "web", alice, {}, host="t1")
    return {"payload": payload,
            "maker_sig": sign(paramiko.PKey.from_path(str(keys["alice"])), PURPOSE_REQUEST,
                              digest(payload)),
            "checker": "bob",
            "checker_sig": sign(paramiko.PKey.from_path(str(keys["bob"])), PURPOSE_APPROVE,
                                digest(payload))}


def _send(agent: Agent, approval: Any) -> dict[str, Any]:
    msg = {**protocol.request(1, "vm.delete", {"name": "web"}), "approval": approval}
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(agent.socket))
        s.sendall(json.dumps(msg).encode() + b"\n")
        reply: dict[str, Any] = json.loads(s.makefile("rb").readline())
    return reply


def _is(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "object":
        return isinstance(value, dict)
    return isinstance(value, int | float) and not isinstance(value, bool)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10 ** 18), 10 ** 18)  # the wire allows 19 digits
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=6)
ALL = {**{("envelope", k): v for k, v in ENVELOPE_FIELDS.items()},
       **{("payload", k): v for k, v in PAYLOAD_FIELDS.items()}}


@st.composite
def defects(draw: st.DrawFn) -> tuple[str, str, str, Any]:
    """(where, kind of defect, field, value): one thing wrong with a valid envelope."""
    where, field = draw(st.sampled_from(sorted(ALL)))
    kind = draw(st.sampled_from(["type", "missing", "extra"]))
    if kind == "type":
        return where, kind, field, draw(JSON.filter(lambda v: not _is(v, ALL[where, field])))
    if kind == "missing":
        if where == "payload" and field in PAYLOAD_OPTIONAL:
            kind, field = "missing", "expires"
        if where == "envelope" and field in ENVELOPE_OPTIONAL:
            field = "maker_sig"    # an envelope without an audit head is a valid one
        return where, kind, field, None
    fields = ENVELOPE_FIELDS if where == "envelope" else PAYLOAD_FIELDS
    name = draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in fields))
    return where, kind, name, draw(JSON)


def test_the_valid_envelope_passes_so_the_defects_are_what_is_refused(
        agent: Agent, keys: dict[str, Path], approvers: Approvers) -> None:
    # Approved and its nonce spent; then there is no VM web to delete.
    reply = _send(agent, _signed(keys, approvers))
    assert reply["error"]["code"] == "NOT_FOUND", reply


@pytest.mark.parametrize(("approval", "words"), [
    ("yes", "approval must be an object, not string"),
    ([1], "approval must be an object, not array"),
    ({"payload": [], "maker_sig": "", "checker": "", "checker_sig": ""},
     "approval field 'payload' must be an object, not array"),
])
def test_envelopes_that_are_not_objects(agent: Agent, approval: Any, words: str) -> None:
    reply = _send(agent, approval)
    assert reply["error"]["code"] == "FORBIDDEN" and words in reply["error"]["message"], reply


def test_expires_as_a_string_is_forbidden_with_the_reason(
        agent: Agent, keys: dict[str, Path], approvers: Approvers) -> None:
    env = _signed(keys, approvers)
    env["payload"]["expires"] = "tomorrow"
    reply = _send(agent, env)
    assert reply["error"]["code"] == "FORBIDDEN", reply
    assert reply["error"]["message"] == ("request payload field 'expires' must be a number, "
                                         "not string")


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(defect=defects())
def test_malformed_envelopes_are_refused_never_internal(
        agent: Agent, keys: dict[str, Path], approvers: Approvers,
        base: dict[str, Any], defect: tuple[str, str, str, Any]) -> None:
    where, kind, field, value = defect
    env = copy.deepcopy(base)
    target = env if where == "envelope" else env["payload"]
    if kind == "missing":
        del target[field]
    else:
        target[field] = value
    reply = _send(agent, env)
    assert reply["ok"] is False
    assert reply["error"]["code"] in ("FORBIDDEN", "BAD_REQUEST"), (defect, reply)
    # The reason names the field at fault (not a later rule tripping over it).
    assert field in reply["error"]["message"], (defect, reply)


@pytest.fixture(scope="module")
def base(keys: dict[str, Path], approvers: Approvers) -> dict[str, Any]:
    return _signed(keys, approvers)


def _anchors(agent: Agent) -> list[dict[str, Any]]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(agent.socket))
        s.sendall(json.dumps(protocol.request(1, "audit.anchors", {})).encode() + b"\n")
        reply: dict[str, Any] = json.loads(s.makefile("rb").readline())
    assert reply["ok"] is True and reply["result"]["host"] == "t1", reply
    anchors: list[dict[str, Any]] = reply["result"]["anchors"]
    return anchors


def test_the_audit_head_is_kept_with_the_spent_nonce_and_only_once(
        agent: Agent, keys: dict[str, Path], approvers: Approvers) -> None:
    env = {**_signed(keys, approvers), "audit": {"seq": 41, "hash": "ab" * 32}}
    before = _anchors(agent)
    assert _send(agent, env)["error"]["code"] == "NOT_FOUND"   # approved; no VM web
    new = [a for a in _anchors(agent) if a not in before]
    assert [(a["seq"], a["hash"], a["digest"]) for a in new] == [
        (41, "ab" * 32, digest(env["payload"]))]
    # A replay with another head is refused with the nonce, and records nothing.
    replay = _send(agent, {**env, "audit": {"seq": 99, "hash": "cd" * 32}})
    assert "already executed" in replay["error"]["message"], replay
    assert [a for a in _anchors(agent) if a not in before] == new


@pytest.mark.parametrize(("head", "words"), [
    ({"seq": "41", "hash": "ab"}, "approval audit head field 'seq' must be an integer, not string"),
    ({"seq": 4.5, "hash": "ab"}, "field 'seq' must be an integer, not number"),
    ({"seq": 4}, "approval audit head lacks 'hash'"),
    ({"seq": 4, "hash": "ab", "x": 1}, "approval audit head has unknown field(s) x"),
])
def test_a_malformed_audit_head_is_forbidden(agent: Agent, keys: dict[str, Path],
                                             approvers: Approvers, head: Any,
                                             words: str) -> None:
    reply = _send(agent, {**_signed(keys, approvers), "audit": head})
    assert reply["error"]["code"] == "FORBIDDEN" and words in reply["error"]["message"], reply
