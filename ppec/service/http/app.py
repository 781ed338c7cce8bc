"""The HTTP app: JSON API (/api/v1/, OpenAPI at /api/v1/openapi.json), /metrics and the
web UI (/), read-only over the operator store.

    app = create_app("~/.local/share/ppec/ppec.db", token=None)
    handle = server.start(app, "127.0.0.1", 8480)
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI

import ppec
from ppec.operator import config as ppec_config
from ppec.operator.config import Config
from ppec.operator.store import Store
from ppec.service.http import api, errors, metrics, web
from ppec.service.http.auth import ASGIApp, Receive, Scope, Send, TokenGate
from ppec.service.http.brief import Warmer
from ppec.service.http.reader import Reader
from ppec.service.http.state import State


def create_app(store_location: str, *, token: str | None = None, fresh_for: float = 30.0,
               clock: Callable[[], float] = time.time, config: Config | None = None,
               leader: Callable[[], bool | None] | None = None,
               warm_every: float | None = 1.0, store_connections: int = 4) -> FastAPI:
    """The app over the store at ``store_location`` (SQLite path or postgresql:// URL).

    ``fresh_for``: a snapshot older than this many seconds shows as ``stale``.
    ``leader``: asked by /api/v1/health whether this process runs the jobs.
    ``token``: when set, every request needs ``Authorization: Bearer <token>``.
    ``warm_every``: seconds between background parses of changed snapshots (None: parse
    on demand only), so a /metrics scrape of a large fleet finds them parsed.
    ``store_connections``: the requests' pool of store connections ([serve]).
    """
    config = config or ppec_config.load()
    opener = functools.partial(Store, connect_timeout=config.store_connect_timeout)
    st = State(reader=Reader(store_location, opener, store_connections), config=config,
               fresh_for=fresh_for, clock=clock, leader=leader)
    app = FastAPI(title="ppec", version=ppec.__version__,
                  description="Read-only view of a ppec fleet: hosts, VMs, capacity, "
                              "alerts, requests, audit. Changes go through the ppec CLI.",
                  openapi_url="/api/v1/openapi.json", docs_url=None, redoc_url=None,
                  lifespan=_lifespan(st, warm_every))
    app.state.ppec = st
    errors.install(app)
    app.include_router(api.router(st))
    app.include_router(metrics.router(st))
    web.mount(app, st)
    # Outermost but the token gate: a refused request never takes a connection.
    app.add_middleware(StoreLease, reader=st.reader)
    if token is not None:
        app.add_middleware(TokenGate, token=token)
    return app


class StoreLease:
    """Each HTTP request borrows its store connection from the reader's pool and gives
    it back when the response is sent (plain ASGI: cheap per request)."""

    def __init__(self, app: ASGIApp, reader: Reader) -> None:
        self.app, self.reader = app, reader

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self.reader.lease():
            await self.app(scope, receive, send)


def _lifespan(st: State, warm_every: float | None
              ) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warmer = None
        if warm_every is not None:
            warmer = Warmer(st.reader.briefs, st.reader.store, warm_every)
            warmer.start()
        yield
        if warmer is not None:
            warmer.stop()
        st.reader.close()
    return lifespan
