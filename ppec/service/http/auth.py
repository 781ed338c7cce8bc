"""The bearer token check, as plain ASGI middleware (cheap per request): with a token set,
a request without ``Authorization: Bearer <token>`` gets 401 and nothing else.

Browsers cannot add that header to a page load, so the UI also accepts the token once in
``/?token=…``: it answers with an HttpOnly, SameSite=Strict cookie and a redirect to the
same page without the token in its address.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "ppec_token"
_DENIED = b'{"error":{"code":"UNAUTHORIZED","message":"a bearer token is required"}}'


class TokenGate:
    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    def _same(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        bearer = headers.get("authorization", "")
        if bearer[:7].lower() == "bearer " and self._same(bearer[7:].strip()):
            await self.app(scope, receive, send)
            return
        cookie = SimpleCookie(headers.get("cookie", "")).get(COOKIE)
        if cookie is not None and self._same(cookie.value):
            await self.app(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        given = [v for k, v in query if k == "token"]
        if given and self._same(given[0]) and not scope["path"].startswith("/api/"):
            await _login(scope, send, token=given[0],
                         rest=urlencode([(k, v) for k, v in query if k != "token"]))
            return
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
            (b"content-length", str(len(_DENIED)).encode())]})
        await send({"type": "http.response.body", "body": _DENIED})


async def _login(scope: Scope, send: Send, *, token: str, rest: str) -> None:
    location = scope["path"] + (f"?{rest}" if rest else "")
    cookie = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
    await send({"type": "http.response.start", "status": 303, "headers": [
        (b"location", location.encode()), (b"set-cookie", cookie.encode()),
        (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
