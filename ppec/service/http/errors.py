"""Every error as one small JSON document, never a traceback: ``{"error": {"code",
"message"}}`` with 400 (bad input), 401 (token), 404 (unknown path or name), 405 (not GET)
or 500 (ours; the traceback goes to the service's log only)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from ppec.core.errors import BadInput, NotFound, PpecError
from ppec.service.http.state import Json

log = logging.getLogger("ppec.service.http")


def error(status: int, code: str, message: str) -> Json:
    return Json({"error": {"code": code, "message": message}}, status_code=status)


async def _http(request: Request, exc: Exception) -> Json:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error(404, "NOT_FOUND", f"no such path: {request.url.path}")
    if exc.status_code == 405:
        return error(405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed here: the "
                     f"API is read-only (GET); changes go through the ppec CLI")
    return error(exc.status_code, "HTTP", str(exc.detail))


async def _invalid(request: Request, exc: Exception) -> Json:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for e in exc.errors()[:3]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "query")
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return error(400, "BAD_INPUT", "; ".join(parts) or "invalid request")


async def _ppec(request: Request, exc: Exception) -> Json:
    assert isinstance(exc, PpecError)
    if isinstance(exc, NotFound):
        return error(404, exc.code, exc.message)
    if isinstance(exc, BadInput):
        return error(400, exc.code, exc.message)
    log.warning("%s %s: %s (%s)", request.method, request.url.path, exc.message, exc.code)
    return error(500, exc.code, exc.message)


async def _internal(request: Request, exc: Exception) -> Json:
    log.error("%s %s failed", request.method, request.url.path,
              exc_info=(type(exc), exc, exc.__traceback__))
    return error(500, "INTERNAL", "internal error (the service's log has the details)")


def install(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(PpecError, _ppec)
    app.add_exception_handler(Exception, _internal)
