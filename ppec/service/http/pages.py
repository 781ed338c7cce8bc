"""Pages of a list: a ``limit`` and an opaque ``cursor`` that names where the last page
ended (the last key seen), so a page costs the same at row 10 and at row 10,000, and a row
inserted meanwhile neither repeats nor hides the rest."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from ppec.core.errors import BadInput

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class BadCursor(BadInput):
    code = "BAD_CURSOR"


def encode(last_key: str) -> str:
    raw = json.dumps({"v": 1, "after": last_key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> str:
    """The key a page starts after; BadCursor for anything this module did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = json.loads(raw)
    except (binascii.Error, ValueError):
        raise BadCursor(f"malformed cursor {cursor[:40]!r}: pass back the `next` value of "
                        f"the previous page unchanged") from None
    if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("after"), str):
        raise BadCursor(f"malformed cursor {cursor[:40]!r}: pass back the `next` value of "
                        f"the previous page unchanged")
    return str(doc["after"])


@dataclass(frozen=True)
class PageAsk:
    limit: int
    after: str | None   # None: from the start

    @classmethod
    def of(cls, limit: int | None, cursor: str | None) -> PageAsk:
        if limit is None:
            limit = DEFAULT_LIMIT
        if not 1 <= limit <= MAX_LIMIT:
            raise BadInput(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
        return cls(limit, decode(cursor) if cursor else None)


def next_cursor(keys: list[str], ask: PageAsk, more: bool) -> str | None:
    """The cursor of the page after one that ended at ``keys[-1]``; None at the end."""
    return encode(keys[-1]) if more and keys else None
