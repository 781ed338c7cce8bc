"""The service's HTTP side: a read-only JSON API (/api/v1/), Prometheus /metrics and a
web UI (/), all served from one FastAPI app over the operator store.

Nothing here is imported on the CLI's path except by ``ppec serve`` itself: FastAPI and
uvicorn cost tens of milliseconds to import. Start with :func:`ppec.service.http.app.create_app`
and :func:`ppec.service.http.server.start`.
"""
