"""Waiting out a store that is busy or restarting, instead of failing a runbook.

Every PostgreSQL has a connection limit (``max_connections``, a role's ``CONNECTION
LIMIT``); 200 ``ppec ip allocate`` started at once with ``&`` meet it. A server that
restarts refuses connections for a moment, then says it is starting up. A SQLite store
is locked while another process writes. None of these is the operator's error: the
client waits its turn, with jittered exponential back-off (so a hundred waiting clients
do not retry in step), up to ``[store] connect_timeout``, then fails with the last error
and how long it waited.

psycopg reports a failed connection without a SQLSTATE (libpq has no result to carry
one), so the transient kinds are recognised by libpq's and the server's message text.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from ppec.core.errors import PpecError

T = TypeVar("T")

DEFAULT_CONNECT_TIMEOUT = 30.0

# Server messages (their SQLSTATE in brackets) and libpq's, all worth a retry.
_TRANSIENT = (
    "too many connections",              # 53300, also "... for role" / "for database"
    "too many clients",                  # 53300 "sorry, too many clients already"
    "connection slots are reserved",     # 53300 past superuser_reserved_connections
    "the database system is starting up",     # 57P03
    "the database system is shutting down",   # 57P03
    "the database system is in recovery mode",
    "not yet accepting connections",     # 57P03 (hot standby start-up)
    "connection refused",                # the server is down or restarting
    "server closed the connection unexpectedly",
    "terminating connection due to administrator command",   # 57P01: a restart
    "timeout expired",                   # a connect attempt outlived its own timeout
    "database is locked",                # SQLite, past its busy timeout
)


class StoreUnavailable(PpecError):
    code = "STORE_UNAVAILABLE"


def is_transient(error: BaseException) -> bool:
    text = str(error).lower()
    return any(t in text for t in _TRANSIENT)


def with_backoff(attempt: Callable[[float], T], *, timeout: float, what: str,
                 transient: Callable[[BaseException], bool] = is_transient,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> T:
    """``attempt(remaining)`` until it succeeds, retrying transient errors for up to
    ``timeout`` seconds; ``remaining`` bounds the attempt's own wait. Other errors, and
    the last transient one, are raised as ``StoreUnavailable`` naming the wait."""
    start = clock()
    pause = 0.05
    tries = 0
    while True:
        tries += 1
        remaining = timeout - (clock() - start)
        try:
            return attempt(max(remaining, 0.5))
        except PpecError:
            raise
        except Exception as e:
            detail = " ".join(str(e).split())
            if not transient(e):
                raise StoreUnavailable(f"cannot reach the store at {what}: {detail}") from None
            waited = clock() - start
            if waited >= timeout:
                raise StoreUnavailable(
                    f"the store at {what} is still unavailable after waiting {waited:.1f} s "
                    f"({tries} attempts; [store] connect_timeout = {timeout:g} s): "
                    f"{detail}") from None
            # Full jitter on a doubling step (50 ms to 2 s): waiting clients spread out.
            sleep(min(random.uniform(pause / 2, pause), timeout - waited))
            pause = min(pause * 2, 2.0)
