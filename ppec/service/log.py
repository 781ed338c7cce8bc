"""The service's log: one JSON object per line on stderr (time, level, event, fields)."""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error")


class Log:
    """Thread-safe: jobs, the pool and the notifiers all write here."""

    def __init__(self, out: TextIO | None = None, level: str = "info") -> None:
        self._out = out
        self._lock = threading.Lock()
        self._min = LEVELS.index(level)

    def __call__(self, level: str, event: str, **fields: Any) -> None:
        if LEVELS.index(level) < self._min:
            return
        record = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                  "level": level, "event": event,
                  **{k: v for k, v in fields.items() if v is not None}}
        line = json.dumps(record, default=str, separators=(",", ":"))
        out = self._out or sys.stderr
        with self._lock:
            try:
                out.write(line + "\n")
                out.flush()
            except (OSError, ValueError):   # stderr gone (closed pipe): keep serving
                pass

    def info(self, event: str, **fields: Any) -> None:
        self("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self("error", event, **fields)
