"""What every route reads: the store (per thread), the config, the clock and caches."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from ppec.operator.config import Config
from ppec.service.http.facts import Memo
from ppec.service.http.reader import Reader


@dataclass
class State:
    reader: Reader
    config: Config
    fresh_for: float
    clock: Callable[[], float]
    leader: Callable[[], bool | None] | None = None
    memo: Memo = field(default_factory=lambda: Memo(ttl=10.0))
    # Many readers asking for the same page within a second share one build (its as_of
    # says when the store was read, so the answer stays honest about its age).
    pages: Memo = field(default_factory=lambda: Memo(ttl=1.0))

    def now(self) -> float:
        return float(self.clock())

    def shared(self, key: tuple[object, ...], make: Callable[[], dict[str, Any]]) -> Response:
        """A page's JSON, built at most once a second for the same question, and again
        at once after ppec changed a VM (a snapshot kept from before is not fresh)."""
        body = self.pages.get(key, self.reader.last_vm_change(), lambda: Json(make()).body)
        return Response(body, media_type="application/json")


class Json(Response):
    """JSON without FastAPI's per-field re-encoding (a page of hosts is plain data
    already); compact, so a page of 1,000 hosts stays small."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":"), allow_nan=False).encode()
