"""Wire protocol v1: JSON lines between the CLI and a host agent.

Both ends use this module, so the limits are the same on each side. Standard library only.
"""

from __future__ import annotations

import json
from typing import Any

from ppec.core.errors import ProtocolError

VERSION = 1
MAX_LINE = 1 << 20          # bytes, newline included
MAX_DEPTH = 32              # nesting of objects and arrays
MAX_INT_DIGITS = 19         # fits a signed 64-bit integer


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ProtocolError(f"integer with more than {MAX_INT_DIGITS} digits", code="BAD_JSON")
    return int(text)


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not valid JSON", code="BAD_JSON")


def _depth(value: Any) -> int:
    # Iterative, so a hostile document cannot exhaust the Python stack here.
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item)
    return deepest


def decode(line: bytes) -> dict[str, Any]:
    """Parse one line into a message object, enforcing every limit."""
    if len(line) > MAX_LINE:
        raise ProtocolError(f"line of {len(line)} bytes exceeds the limit of {MAX_LINE}",
                            code="LINE_TOO_LONG")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError(f"line is not UTF-8: {e}", code="BAD_JSON") from None
    # A cheap pre-check: json's C parser recurses per nesting level, and a very deep
    # document could hit the recursion limit before the depth check below runs.
    if text.count("[") + text.count("{") > MAX_DEPTH and _too_deep(text):
        raise ProtocolError(f"nesting deeper than {MAX_DEPTH}", code="BAD_JSON")
    try:
        value = json.loads(text, parse_int=_parse_int, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"invalid JSON: {e.msg} at column {e.colno}",
                            code="BAD_JSON") from None
    except RecursionError:
        raise ProtocolError(f"nesting deeper than {MAX_DEPTH}", code="BAD_JSON") from None
    if not isinstance(value, dict):
        raise ProtocolError("a message must be a JSON object", code="BAD_JSON")
    if _depth(value) > MAX_DEPTH:
        raise ProtocolError(f"nesting deeper than {MAX_DEPTH}", code="BAD_JSON")
    return value


def _too_deep(text: str) -> bool:
    """Bracket depth outside strings, without parsing."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":"), sort_keys=True).encode() + b"\n"
    if len(data) > MAX_LINE:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the limit of {MAX_LINE}",
                            code="LINE_TOO_LONG")
    return data


def request(msg_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"v": VERSION, "id": msg_id, "method": method, "params": params}


def reply_ok(msg_id: Any, result: Any) -> dict[str, Any]:
    return {"v": VERSION, "id": msg_id, "ok": True, "result": result}


def reply_error(msg_id: Any, code: str, message: str,
                details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"v": VERSION, "id": msg_id, "ok": False,
            "error": {"code": code, "message": message, "details": details or {}}}
