"""The read-only JSON API under /api/v1/. Every answer carries ``as_of`` (when the store
was read, epoch seconds); rows built from a snapshot carry its ``taken_at`` and ``age_s``.
Lists are pages: ``limit`` (1..1000, default 100) and the opaque ``cursor`` from the
previous page's ``next`` (null on the last page)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from starlette.responses import Response

from ppec.core.errors import BadInput, NotFound
from ppec.service.http import facts, imageview, views
from ppec.service.http.pages import PageAsk, encode, next_cursor
from ppec.service.http.reader import HOST_STATES
from ppec.service.http.state import Json, State

Limit = Query(None, description="Rows per page, 1..1000 (default 100).")
Cursor = Query(None, description="The `next` of the previous page, unchanged.")
BY = ("region", "rack", "host", "numa")
VM_FIELDS = ("Each VM: the store's record, `state` and `state_from`, `numa`, `cpus`, "
             "`taken_at`, `age_s`, and `nics`: [{mac, vrf, network, bridge, address, model, "
             "queues, target}] (MAC, VRF and address from the VM's document; the rest from "
             "its host's snapshot, \"\" and 0 where that lacks the MAC; [] for a VM made "
             "before documents).")


def host_list(st: State, ask: PageAsk, **filters: str | None) -> dict[str, Any]:
    now = st.now()
    if filters.get("state") not in (None, *HOST_STATES):
        raise BadInput(f"state must be one of {', '.join(HOST_STATES)}, "
                       f"not {filters['state']!r}")
    rows, more = st.reader.host_page(ask, now=now, fresh_for=st.fresh_for, **filters)
    parsed = st.reader.briefs.get(st.reader.store(), {r.host.name: r.taken_at for r in rows
                                                      if r.taken_at is not None})
    hosts = [views.host_doc(r, parsed.get(r.host.name), now, st.fresh_for) for r in rows]
    return {"as_of": now, "fresh_for_s": st.fresh_for, "limit": ask.limit, "hosts": hosts,
            "next_cursor": next_cursor([h["name"] for h in hosts], ask, more)}


def host_detail(st: State, name: str) -> dict[str, Any]:
    now = st.now()
    rows, _ = st.reader.host_page(PageAsk(1, None), now=now, fresh_for=st.fresh_for,
                                  name=name)
    if not rows:
        raise NotFound(f"unknown host {name!r}")
    row = rows[0]
    parsed = st.reader.cache.get(st.reader.store(), {name: row.taken_at}
                                 if row.taken_at is not None else {}).get(name)
    doc = views.host_doc(row, parsed, now, st.fresh_for)
    doc["numa"] = views.numa_doc(parsed) if parsed is not None else None
    doc.update(views.host_network_doc(parsed))
    vms = vm_list(st, PageAsk(1000, None), host=name)
    doc["vms"], doc["vms_next"] = vms["vms"], vms["next_cursor"]
    doc["images"] = imageview.on_host(st.reader.store(), name, parsed, now)
    return {"as_of": now, **doc}


def image_rows(st: State) -> list[dict[str, Any]]:
    """The whole catalogue with where each version is, kept while nothing changed."""
    store = st.reader.store()
    rows: list[dict[str, Any]] = st.memo.get(
        "images", imageview.version(store),
        lambda: imageview.catalogue(store, st.reader.briefs))
    return rows


def image_list(st: State, ask: PageAsk) -> dict[str, Any]:
    now = st.now()
    rows, cursor = imageview.page(image_rows(st), ask, now)
    return {"as_of": now, "limit": ask.limit, "images": rows, "next_cursor": cursor}


def image_detail(st: State, name: str) -> dict[str, Any]:
    now = st.now()
    return {"as_of": now, "name": name,
            "versions": imageview.of_name(image_rows(st), name, now)}


def vm_list(st: State, ask: PageAsk, host: str | None = None,
            state: str | None = None) -> dict[str, Any]:
    """A page of VMs; with ``state``, rows are read in chunks until the page is full."""
    now = st.now()
    size = ask.limit + 1 if state is None else max(200, ask.limit + 1)
    found: list[dict[str, Any]] = []
    after = ask.after
    while len(found) <= ask.limit:
        chunk = st.reader.vm_chunk(after, size, host)
        parsed = st.reader.cache.get(st.reader.store(), {
            line.vm["host"]: line.taken_at for line in chunk if line.taken_at is not None})
        for line in chunk:
            doc = views.vm_doc(line, parsed.get(line.vm["host"]), now)
            if state is None or doc["state"] == state:
                found.append(doc)
                if len(found) > ask.limit:
                    break
        if len(chunk) < size:
            break
        after = chunk[-1].vm["name"]
    page = found[:ask.limit]
    return {"as_of": now, "limit": ask.limit, "vms": page,
            "next_cursor": next_cursor([v["name"] for v in page], ask, len(found) > ask.limit)}


def vm_detail(st: State, name: str) -> dict[str, Any]:
    lines = st.reader.vm_chunk(None, 1, None, name=name)
    if not lines:
        raise NotFound(f"unknown VM {name!r}")
    now, line = st.now(), lines[0]
    parsed = st.reader.cache.get(st.reader.store(), {line.vm["host"]: line.taken_at}
                                 if line.taken_at is not None else {})
    return {"as_of": now, **views.vm_doc(line, parsed.get(line.vm["host"]), now)}


def router(st: State) -> APIRouter:
    api = APIRouter(prefix="/api/v1", default_response_class=Json)

    @api.get("/hosts", summary="Hosts, a page at a time, with freshness and resources")
    def hosts(limit: int | None = Limit, cursor: str | None = Cursor,
              region: str | None = None, rack: str | None = None,
              state: str | None = Query(None, description="fresh, stale, changed (taken "
                                                           "before a VM change), failed or none"),
              ) -> Response:
        return st.shared(("hosts", limit, cursor, region, rack, state), lambda: host_list(
            st, PageAsk.of(limit, cursor), region=region, rack=rack, state=state))

    @api.get("/hosts/{name}", summary="One host with its NUMA nodes, networks, images and "
                                      "VMs",
             description="A host as in /hosts, plus `numa`, `networks` (name, kind, source, "
                         "mtu, present, up, device_mtu), `cpu_mode`, `cpu_model`, "
                         "`vhost_net` (null without a snapshot), its `vms` and `images` "
                         "(digest, names, size, held, recorded_at, in_snapshot, taken_at, "
                         "age_s).")
    def host(name: str) -> Json:
        return Json(host_detail(st, name))

    @api.get("/vms", summary="VMs, a page at a time; unknown (with last_seen) on a failed host",
             description=VM_FIELDS)
    def vms(limit: int | None = Limit, cursor: str | None = Cursor, host: str | None = None,
            state: str | None = None) -> Response:
        return st.shared(("vms", limit, cursor, host, state), lambda: vm_list(
            st, PageAsk.of(limit, cursor), host=host, state=state))

    @api.get("/vms/{name}", summary="One VM", description=VM_FIELDS)
    def vm(name: str) -> Json:
        return Json(vm_detail(st, name))

    _image_routes(api, st)
    _facts_routes(api, st)
    return api


IMAGE_FIELDS = (
    "Each version: `name, digest, version, newest, kind` (disk, kernel, initrd), `format, "
    "virtual_bytes, file_bytes, os_user, description, added_at`; `hosts` (where it is), "
    "`where` [{host, held, recorded_at, in_snapshot, taken_at, age_s}] (every host with a "
    "push record or a snapshot listing it; `held` is false where the host's snapshot, newer "
    "than the push, does not list it) and `vms` (whose documents name it).")


def _image_routes(api: APIRouter, st: State) -> None:
    @api.get("/images", summary="The image catalogue: every version, where it is, who uses "
                                "it", description=IMAGE_FIELDS)
    def image_versions(limit: int | None = Limit, cursor: str | None = Cursor) -> Json:
        return Json(image_list(st, PageAsk.of(limit, cursor)))

    @api.get("/images/{name}", summary="One image name's versions, newest first",
             description=IMAGE_FIELDS)
    def image(name: str) -> Json:
        return Json(image_detail(st, name))


def _facts_routes(api: APIRouter, st: State) -> None:
    @api.get("/capacity", summary="ppec capacity: resources per group, and how many of a "
                                  "shape fit")
    def capacity(flavor: str | None = None, cpus: int | None = None,
                 memory: str | None = Query(None, description="e.g. 4G"),
                 disk: str | None = None, numa: str = "shared", by: str = "host") -> Json:
        if by not in BY:
            raise BadInput(f"by must be one of {', '.join(BY)}, not {by!r}")
        shape = facts.Shape(flavor, cpus, memory, disk, numa)
        store = st.reader.store()
        doc = st.memo.get(("capacity", shape, by), facts.fleet_version(store),
                          lambda: facts.capacity(store, st.config, shape, by))
        return Json({"as_of": st.now(), **doc})

    @api.get("/capacity/flavors", summary="How many of each configured flavor fit, by "
                                          "region and by rack")
    def flavors() -> Json:
        store = st.reader.store()
        doc = st.memo.get("flavors", facts.fleet_version(store),
                          lambda: facts.flavor_table(store, st.config))
        return Json({"as_of": st.now(), **doc})

    @api.get("/alerts", summary="Fleet alerts, newest first")
    def alerts(limit: int | None = Limit, cursor: str | None = Cursor,
               state: str = Query("open", description="open, resolved or all"),
               host: str | None = None, code: str | None = None) -> Json:
        ask, now = PageAsk.of(limit, cursor), st.now()
        rows, more = facts.alert_page(st.reader.store(), ask, now, state=state, host=host,
                                      code=code)
        return Json({"as_of": now, "limit": ask.limit, "alerts": rows,
                     "next_cursor": encode(str(rows[-1]["id"])) if more else None})

    @api.get("/requests", summary="Maker-checker requests; pending ones say how to approve")
    def requests(state: str = Query("pending", description="pending, approved, rejected, "
                                    "cancelled, executed, failed or all")) -> Json:
        now = st.now()
        rows = facts.requests(st.reader.store(), st.config,
                              None if state == "all" else state, now)
        return Json({"as_of": now, "requests": rows})

    @api.get("/audit", summary="The audit chain's state (ppec audit verify)")
    def audit() -> Json:
        store = st.reader.store()
        return Json({"as_of": st.now(), **facts.audit_state(store)})

    @api.get("/health", summary="The service: leader or not, each job's last run")
    def health() -> Json:
        now = st.now()
        return Json({"as_of": now, **facts.health(st.reader.store(), now, st.leader)})
