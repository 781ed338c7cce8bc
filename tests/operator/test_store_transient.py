"""Waiting out a busy store: the back-off itself, SQLite's lock, and ppec serve's pool of
connections (issue 27). The PostgreSQL storm with real CLI processes is
test_store_storm.py."""

from __future__ import annotations

import json
import sqlite3
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from ppec.operator.store import Store
from ppec.operator.store.transient import StoreUnavailable, is_transient, with_backoff
from tests.conftest import fresh_pg_database
from tests.realparts import Cli
from tests.service.http_support import fill, serving


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def test_transient_errors_are_retried_with_growing_jittered_pauses() -> None:
    clock, tries = FakeClock(), []

    def attempt(remaining: float) -> str:
        tries.append(remaining)
        if len(tries) < 6:
            raise OSError("FATAL:  too many connections for role \"storm\"")
        return "connected"
    assert with_backoff(attempt, timeout=30, what="db", sleep=clock.sleep,
                        clock=clock) == "connected"
    assert len(clock.pauses) == 5
    # Each pause lies in [step/2, step] of a doubling step from 50 ms.
    for i, pause in enumerate(clock.pauses):
        step = min(0.05 * 2 ** i, 2.0)
        assert step / 2 <= pause <= step, (i, pause)
    assert tries[0] == 30 and tries[-1] < 30   # each attempt knows what time is left


def test_the_last_transient_error_and_the_wait_are_reported() -> None:
    clock = FakeClock()

    def attempt(remaining: float) -> str:
        raise OSError("the database system is starting up")
    with pytest.raises(StoreUnavailable) as e:
        with_backoff(attempt, timeout=5, what="postgresql://x", sleep=clock.sleep,
                     clock=clock)
    assert "after waiting 5.0 s" in e.value.message
    assert "connect_timeout = 5 s" in e.value.message
    assert "starting up" in e.value.message and e.value.code == "STORE_UNAVAILABLE"
    assert clock.now == pytest.approx(5.0)   # never sleeps past the timeout


def test_a_lasting_error_fails_at_once() -> None:
    clock, tries = FakeClock(), []

    def attempt(remaining: float) -> str:
        tries.append(1)
        raise OSError('FATAL:  password authentication failed for user "ppec"')
    with pytest.raises(StoreUnavailable, match="password authentication failed"):
        with_backoff(attempt, timeout=30, what="db", sleep=clock.sleep, clock=clock)
    assert tries == [1] and clock.pauses == []


@pytest.mark.parametrize("text,transient", [
    ("connection failed: ... Connection refused", True),
    ("FATAL:  sorry, too many clients already", True),
    ("FATAL:  remaining connection slots are reserved for roles with SUPERUSER", True),
    ("FATAL:  the database system is shutting down", True),
    ('FATAL:  database "nodb" does not exist', False),
    ("database is locked", True),
])
def test_what_counts_as_transient(text: str, transient: bool) -> None:
    assert is_transient(OSError(text)) is transient


def test_a_locked_sqlite_store_is_waited_for_then_fails_naming_the_wait(cli: Cli) -> None:
    cli.ok("ip", "pool", "add", "p", "--vrf", "blue", "--cidr", "10.9.0.0/24")
    cli.configure("[store]\nconnect_timeout = 1\n")
    other = sqlite3.connect(cli.db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")     # another writer holds the store
    done = cli.run("ip", "allocate", "--vrf", "blue", "-o", "json")
    assert done.returncode != 0
    err = json.loads(done.stderr)["error"]
    assert err["code"] == "STORE_UNAVAILABLE"
    assert "stayed locked by another writer" in err["message"]
    assert "connect_timeout = 1 s" in err["message"]
    # The writer finishing within the wait: the command waits, then succeeds.
    cli.configure("[store]\nconnect_timeout = 20\n")
    release = threading.Timer(1.5, lambda: other.execute("ROLLBACK"))
    release.start()
    done = cli.ok("ip", "allocate", "--vrf", "blue", "-o", "json")
    release.join()
    assert json.loads(done.stdout)["address"] == "10.9.0.1"
    other.close()


def _connections(url: str) -> int:
    import psycopg
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as db:
        row = db.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                         (name,)).fetchone()
    return int(row[0]) if row else 0


def test_serve_reads_through_a_small_pool_not_a_connection_per_thread(pg_ready: str) -> None:
    with fresh_pg_database("ppec_pool") as url:
        names = fill(url, 20, vms=2)
        peak = [0]
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _connections(url))
                stop.wait(0.02)
        with serving(url, warm_every=None, store_connections=3) as base:
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()

            def page(i: int) -> int:
                path = f"/api/v1/hosts/{names[i % 20]}" if i % 2 else "/api/v1/hosts?limit=5"
                with urllib.request.urlopen(base + path, timeout=60) as r:
                    return int(r.status)
            with ThreadPoolExecutor(60) as pool:
                codes = list(pool.map(page, range(600)))
            stop.set()
            watcher.join()
        assert codes == [200] * 600
        # anyio runs sync endpoints on up to 40 threads: without the pool, 40 connections.
        assert 1 <= peak[0] <= 3, peak
        Store(url).close()
