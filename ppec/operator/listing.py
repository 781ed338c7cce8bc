"""Lists that stay usable at 10,000 hosts: `host list` and the store's VM records, a page
at a time, with opaque cursors.

A cursor is base64url (no padding) of ``{"of": "hosts"|"vms", "after": <last name>}``: the
sort key the next page starts after, tagged with its list so that a host cursor handed to
`vm list` is refused rather than silently misread. Filters are not in the cursor: give the
same ones on every page (a changed filter pages the new selection from that name on).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any, Literal

from ppec.core.errors import BadInput
from ppec.operator import snapshots
from ppec.operator.context import Context
from ppec.operator.store import pages, snaprows

Of = Literal["hosts", "vms"]


def encode_cursor(of: Of, after: str) -> str:
    raw = json.dumps({"of": of, "after": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(of: Of, cursor: str) -> str:
    """The name a cursor starts after; a cursor that is not one of ours for this list is
    BAD_CURSOR (exit 2)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = json.loads(raw)
    except (binascii.Error, ValueError):
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("after"), str) \
            or not doc["after"] or doc.get("of") not in ("hosts", "vms"):
        raise BadInput(f"malformed cursor {cursor[:40]!r}: pass the next_cursor of a "
                       f"previous `-o json` page as it is", code="BAD_CURSOR")
    if doc["of"] != of:
        raise BadInput(f"that cursor pages the {doc['of']} list, not the {of} list",
                       code="BAD_CURSOR")
    return str(doc["after"])


def hosts(ctx: Context, *, limit: int | None = None, cursor: str | None = None,
          region: str = "", rack: str = "") -> dict[str, Any]:
    """The inventory with each host's stored snapshot summary, one page: ``hosts`` and
    ``next_cursor`` (None on the last page). No limit: every matching host."""
    after = decode_cursor("hosts", cursor) if cursor is not None else ""
    page, last = pages.hosts_page(ctx.store, limit=limit, after=after, region=region,
                                  rack=rack)
    snaps = snaprows.placement_views(ctx.store, [h.name for h in page])   # not whole
    changed = pages.vm_changes(ctx.store, [h.name for h in page])
    stale_after = ctx.config.stale_after()
    now = time.time()
    rows = []
    for h in page:
        s = snapshots.summary(h.name, snaps.get(h.name, {}), now, stale_after,
                              changed.get(h.name))
        rows.append({**h.as_dict(), "state": s["state"], "age_s": s["age_s"]
                     if s["state"] != "none" else None, "changed_at": s["changed_at"],
                     "vms": s["vms"], "cpu_percent": s["cpu_percent"]})
    return {"hosts": rows, "next_cursor": encode_cursor("hosts", last) if last else None}


def vms(ctx: Context, *, limit: int | None = None, cursor: str | None = None,
        host: str = "", state: str = "") -> dict[str, Any]:
    """The VMs the store records (as ppec last saw them; no agent is asked), one page."""
    after = decode_cursor("vms", cursor) if cursor is not None else ""
    if host:
        ctx.store.host(host)   # an unknown host is NOT_FOUND, not an empty page
    page, last = pages.vms_page(ctx.store, limit=limit, after=after, host=host, state=state)
    rows = [{"name": v.name, "host": v.host, "state": v.state, "vcpus": v.vcpus,
             "memory_mib": v.memory_mib, "disk_bytes": v.disk_bytes, "image": v.image,
             "created_at": v.created_at, "updated_at": v.updated_at} for v in page]
    return {"vms": rows, "errors": [], "source": "store",
            "next_cursor": encode_cursor("vms", last) if last else None}
