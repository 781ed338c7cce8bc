"""Approval envelopes and payloads: their shape is checked before any rule reads them, so
a wrong type is a FORBIDDEN naming the field (both where the agent checks and where the
CLI re-checks at execute), never a TypeError or ValueError."""

from __future__ import annotations

import math
from typing import Any

import pytest

from ppec.core.signing import (
    Approvers,
    Forbidden,
    check_approval,
    check_envelope,
    check_payload,
)

PAYLOAD: dict[str, Any] = {
    "operation": "vm.delete", "type": "vm", "resource": "web", "host": "t1", "params": {},
    "maker": "alice", "maker_key": "SHA256:x", "created": 1.0, "expires": 2e9,
    "nonce": "ab" * 16}
ENVELOPE: dict[str, Any] = {"payload": PAYLOAD, "maker_sig": "s", "checker": "bob",
                            "checker_sig": "t"}


def test_a_well_formed_envelope_passes_the_shape_check() -> None:
    env = check_envelope(ENVELOPE)
    assert (env.payload, env.maker_sig, env.checker, env.checker_sig) == (
        PAYLOAD, "s", "bob", "t")
    # host and params may be absent (requests made before they existed).
    check_payload({k: v for k, v in PAYLOAD.items() if k not in ("host", "params")})


@pytest.mark.parametrize(("change", "words"), [
    ({"expires": "tomorrow"}, "field 'expires' must be a number, not string"),
    ({"expires": True}, "field 'expires' must be a number, not boolean"),
    ({"expires": math.inf}, "field 'expires' must be a number, not non-finite number"),
    ({"expires": math.nan}, "field 'expires' must be a number, not non-finite number"),
    ({"created": None}, "field 'created' must be a number, not null"),
    ({"nonce": 7}, "field 'nonce' must be a string, not number"),
    ({"params": []}, "field 'params' must be an object, not array"),
    ({"extra": 1}, "request payload has unknown field(s) extra"),
])
def test_payload_shape_refusals(change: dict[str, Any], words: str) -> None:
    with pytest.raises(Forbidden) as e:
        check_payload({**PAYLOAD, **change})
    assert words in e.value.message
    # The full rule check (the CLI's path at execute) refuses the same way.
    with pytest.raises(Forbidden) as again:
        check_approval(Approvers(), {**PAYLOAD, **change}, "s", "bob", "t")
    assert again.value.message == e.value.message


@pytest.mark.parametrize(("envelope", "words"), [
    ({k: v for k, v in ENVELOPE.items() if k != "checker_sig"}, "approval lacks 'checker_sig'"),
    ({**ENVELOPE, "chain": 1}, "approval has unknown field(s) chain"),
    ({**ENVELOPE, "checker": ["bob"]}, "field 'checker' must be a string, not array"),
    ({**ENVELOPE, "payload": "{}"}, "field 'payload' must be an object, not string"),
    ("{}", "approval must be an object, not string"),
    ({**ENVELOPE, "payload": {k: v for k, v in PAYLOAD.items() if k != "nonce"}},
     "request payload lacks 'nonce'"),
])
def test_envelope_shape_refusals(envelope: Any, words: str) -> None:
    with pytest.raises(Forbidden) as e:
        check_envelope(envelope)
    assert words in e.value.message
