"""The web UI: server-rendered pages (Jinja2) from the same functions as the JSON API.
Each page's live part (``<main id="live">``) is fetched again every few seconds by
static/ppec.js as an HTML fragment (``?fragment=1``), so the page refreshes itself with
no JavaScript build step, and every file it uses is served from this package."""

from __future__ import annotations

import hashlib
import time
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ppec.service.http import api, facts
from ppec.service.http.pages import PageAsk
from ppec.service.http.state import State

REFRESH_S = 3
HERE = files("ppec.service.http")


def vm_colour(name: str) -> str:
    """A stable, readable background for one VM's CPU cells."""
    hue = int(hashlib.sha256(name.encode()).hexdigest()[:4], 16) % 360
    return f"hsl({hue}, 65%, 72%)"


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def gib(n: float | None) -> str:
    return "-" if n is None else f"{n / (1 << 30):.1f} GiB"


def percent(used: float | None, total: float | None) -> float:
    return 0.0 if not total or used is None else max(0.0, min(100.0, 100.0 * used / total))


def size(n: float | None) -> str:
    """Bytes for people: ``512 B``, ``2.0 MiB``, ``1.5 GiB``."""
    if n is None:
        return "-"
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"


def when(epoch: float | None) -> str:
    return "-" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                   time.gmtime(epoch))


def nic_label(nic: dict[str, Any]) -> str:
    """One NIC as the VM tables show it: ``10.93.0.2/24 (52:54:00:…) on br-93``; ``dhcp``
    without a static address; its VRF when the host's snapshot has not shown the device."""
    where = f"on {nic['bridge']}" if nic.get("bridge") else f"vrf {nic.get('vrf') or '-'}"
    return f"{nic.get('address') or 'dhcp'} ({nic.get('mac')}) {where}"


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(HERE.joinpath("templates"))),
                      autoescape=select_autoescape(["html"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters.update(colour=vm_colour, ago=ago, gib=gib, when=when, nic=nic_label,
                       size=size)
    env.globals.update(percent=percent, refresh_s=REFRESH_S)
    return env


class Pages:
    def __init__(self, st: State) -> None:
        self.st = st
        self.env = environment()

    def render(self, request: Request, name: str, **values: Any) -> HTMLResponse:
        fragment = request.query_params.get("fragment") == "1"
        now = self.st.now()
        template = self.env.get_template(name)
        body = template.render(fragment=fragment, now=now, page=name.split(".")[0],
                               path=request.url.path, query=dict(request.query_params),
                               **values)
        return HTMLResponse(body, headers={"Cache-Control": "no-store"})

    def banner(self) -> dict[str, Any]:
        """What the top of every page says: open alerts, pending requests, audit."""
        store = self.st.reader.store()
        alerts = facts.open_alert_counts(store)
        pending = store.db.execute("SELECT count(*) FROM requests WHERE state = 'pending'"
                                   ).fetchone()[0]
        return {"open_alerts": sum(alerts.values()), "pending": int(pending)}


def mount(app: FastAPI, st: State) -> None:
    pages = Pages(st)
    app.mount("/static", StaticFiles(directory=str(HERE.joinpath("static"))), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def fleet(request: Request, limit: int | None = None, cursor: str | None = None,
              region: str | None = None, rack: str | None = None,
              state: str | None = None) -> HTMLResponse:
        doc = api.host_list(st, PageAsk.of(limit, cursor), region=region or None,
                            rack=rack or None, state=state or None)
        alerts, _ = facts.alert_page(st.reader.store(), PageAsk(10, None), st.now())
        return pages.render(request, "fleet.html", doc=doc, alerts=alerts,
                            health=facts.health(st.reader.store(), st.now(), st.leader),
                            **pages.banner())

    @app.get("/hosts/{name}", response_class=HTMLResponse, include_in_schema=False)
    def host(request: Request, name: str) -> HTMLResponse:
        return pages.render(request, "host.html", host=api.host_detail(st, name),
                            **pages.banner())

    @app.get("/vms", response_class=HTMLResponse, include_in_schema=False)
    def vms(request: Request, limit: int | None = None, cursor: str | None = None,
            host: str | None = None, state: str | None = None) -> HTMLResponse:
        doc = api.vm_list(st, PageAsk.of(limit, cursor), host=host or None,
                          state=state or None)
        return pages.render(request, "vms.html", doc=doc, **pages.banner())

    _image_pages(app, st, pages)
    _fact_pages(app, st, pages)


def _image_pages(app: FastAPI, st: State, pages: Pages) -> None:
    @app.get("/images", response_class=HTMLResponse, include_in_schema=False)
    def images(request: Request, limit: int | None = None,
               cursor: str | None = None) -> HTMLResponse:
        doc = api.image_list(st, PageAsk.of(limit, cursor))
        return pages.render(request, "images.html", doc=doc, image_name=None,
                            **pages.banner())

    @app.get("/images/{name}", response_class=HTMLResponse, include_in_schema=False)
    def image(request: Request, name: str) -> HTMLResponse:
        doc = api.image_detail(st, name)
        return pages.render(request, "images.html", doc={
            "images": doc["versions"], "next_cursor": None}, image_name=name,
            **pages.banner())


def _fact_pages(app: FastAPI, st: State, pages: Pages) -> None:
    @app.get("/capacity", response_class=HTMLResponse, include_in_schema=False)
    def capacity(request: Request) -> HTMLResponse:
        store = st.reader.store()
        doc = st.memo.get("flavors", facts.fleet_version(store),
                          lambda: facts.flavor_table(store, st.config))
        return pages.render(request, "capacity.html", doc=doc, **pages.banner())

    @app.get("/alerts", response_class=HTMLResponse, include_in_schema=False)
    def alerts(request: Request, state: str = Query("open")) -> HTMLResponse:
        rows, more = facts.alert_page(st.reader.store(), PageAsk(200, None), st.now(),
                                      state=state)
        return pages.render(request, "alerts.html", alerts=rows, more=more, state=state,
                            **pages.banner())

    @app.get("/requests", response_class=HTMLResponse, include_in_schema=False)
    def requests(request: Request) -> HTMLResponse:
        rows = facts.requests(st.reader.store(), st.config, "pending", st.now())
        return pages.render(request, "requests.html", requests=rows, **pages.banner())

    @app.get("/audit", response_class=HTMLResponse, include_in_schema=False)
    def audit(request: Request) -> HTMLResponse:
        return pages.render(request, "audit.html", audit=facts.audit_state(st.reader.store()),
                            **pages.banner())
