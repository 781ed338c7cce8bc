import json

import pytest

from ppec.core.errors import ProtocolError
from ppec.wire import protocol


def test_round_trip() -> None:
    msg = protocol.request(7, "vm.get", {"name": "a"})
    assert protocol.decode(protocol.encode(msg)) == msg


@pytest.mark.parametrize(("line", "code"), [
    (b"not json\n", "BAD_JSON"),
    (b"[1, 2]\n", "BAD_JSON"),
    (b'{"a": NaN}\n', "BAD_JSON"),
    (b'{"a": 1' + b"0" * 30 + b"}\n", "BAD_JSON"),
    (b"\xff\xfe\n", "BAD_JSON"),
    (b"[" * 100_000 + b"]" * 100_000 + b"\n", "BAD_JSON"),
    (b'{"a":' * 40 + b"1" + b"}" * 40 + b"\n", "BAD_JSON"),
    (b'{"a": "' + b"x" * protocol.MAX_LINE + b'"}\n', "LINE_TOO_LONG"),
])
def test_limits(line: bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as e:
        protocol.decode(line)
    assert e.value.code == code


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    text = json.dumps({"s": "[" * 1000}).encode()
    assert protocol.decode(text)["s"] == "[" * 1000


def test_encode_refuses_oversized() -> None:
    with pytest.raises(ProtocolError):
        protocol.encode({"x": "y" * protocol.MAX_LINE})


def test_the_proxys_agent_unreachable_is_a_transport_error() -> None:
    """Over SSH a restarting agent answers through the proxy with AGENT_UNREACHABLE: the
    client must see the same error class as a dead local socket, so it retries."""
    from ppec.core.errors import TransportError, from_wire
    err = from_wire({"code": "AGENT_UNREACHABLE", "message": "agent not running"})
    assert isinstance(err, TransportError) and err.code == "AGENT_UNREACHABLE"
