"""The image catalogue as the API and the pages show it: every version with where it is
(the catalogue's record of pushes, and each host's latest snapshot, by the rule in
``ppec.service.imagewhere``) and which VMs' documents name it.

The catalogue is small (names times versions, tens to hundreds of rows), so the whole
list is built at once and kept while nothing it comes from has changed (``version``):
one read of ``image_hosts``, one of the VM documents that name a catalogue image, and the
parsed snapshots the snapshot cache already holds. Pages are cut from that list.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ppec.core.errors import NotFound
from ppec.operator import images
from ppec.operator.store import Store
from ppec.service.http import facts
from ppec.service.http.brief import Brief, Briefs
from ppec.service.http.pages import BadCursor, PageAsk, encode
from ppec.service.http.snapcache import Parsed
from ppec.service.imagewhere import held, recorded_epoch

FIELDS = ("name", "digest", "version", "kind", "format", "virtual_bytes", "file_bytes",
          "os_user", "description", "added_at")


def version(store: Store) -> tuple[Any, ...]:
    """Changes whenever the catalogue, a push record, a VM or a snapshot does."""
    db = store.db
    return (*db.execute("SELECT count(*), sum(version), max(added_at) FROM images").fetchone(),
            *db.execute("SELECT count(*), max(at) FROM image_hosts").fetchone(),
            *db.execute("SELECT count(*), max(updated_at) FROM vms").fetchone(),
            *facts.fleet_version(store))


def snapshots(store: Store, cache: Briefs) -> dict[str, Brief]:
    """Every host's parsed snapshot (the warmer keeps them parsed)."""
    stamps = {str(h): float(t) for h, t in
              store.db.execute("SELECT host, taken_at FROM snapshots").fetchall()}
    return cache.get(store, stamps)


def listings(parsed: dict[str, Brief]) -> dict[str, set[str]]:
    """digest -> the hosts whose latest snapshot lists it."""
    out: dict[str, set[str]] = defaultdict(set)
    for host, p in parsed.items():
        for digest, _ in p.images or ():
            out[digest].add(host)
    return out


def where(recorded: dict[str, str], listing: set[str], parsed: dict[str, Brief]
          ) -> list[dict[str, Any]]:
    """The hosts with any word on one digest: a push record (``recorded``: host ->
    image_hosts.at), or a snapshot listing it (``listing``)."""
    out = []
    for host in sorted(set(recorded) | listing):
        p = parsed.get(host)
        in_snapshot = None if p is None or p.images is None else host in listing
        taken_at = None if p is None else p.taken_at
        at = recorded.get(host)
        out.append({"host": host,
                    "held": held(None if at is None else recorded_epoch(at), taken_at,
                                 in_snapshot),
                    "recorded_at": at, "in_snapshot": in_snapshot, "taken_at": taken_at})
    return out


def catalogue(store: Store, cache: Briefs) -> list[dict[str, Any]]:
    """Every version (by name, newest first within a name), without ages."""
    recorded: dict[str, dict[str, str]] = defaultdict(dict)
    for digest, host, at in store.db.execute("SELECT digest, host, at FROM image_hosts"):
        recorded[str(digest)][str(host)] = str(at)
    parsed = snapshots(store, cache)
    listed = listings(parsed)
    users = images.users_by_digest(store)
    rows, newest = [], set()
    for image in images.versions(store):
        doc: dict[str, Any] = {k: getattr(image, k) for k in FIELDS}
        doc["newest"] = image.name not in newest
        newest.add(image.name)
        doc["where"] = where(recorded.get(image.digest, {}), listed.get(image.digest, set()),
                             parsed)
        doc["hosts"] = [w["host"] for w in doc["where"] if w["held"]]
        doc["vms"] = users.get(image.digest, [])
        rows.append(doc)
    return rows


def aged(row: dict[str, Any], now: float) -> dict[str, Any]:
    """A row with each snapshot's age as of ``now``."""
    return {**row, "where": [{**w, "age_s": None if w["taken_at"] is None
                              else round(max(0.0, now - w["taken_at"]), 3)}
                             for w in row["where"]]}


def _after(ask: PageAsk) -> tuple[str, int] | None:
    if ask.after is None:
        return None
    name, _, number = ask.after.rpartition("@")
    if not name or not number.isdigit():
        raise BadCursor("malformed cursor: not an images cursor")
    return name, int(number)


def page(rows: list[dict[str, Any]], ask: PageAsk, now: float
         ) -> tuple[list[dict[str, Any]], str | None]:
    """One page of ``rows`` (ordered by name, then version down) after the cursor, and
    the next cursor (``NAME@VERSION`` of the last row, opaque to the caller)."""
    after = _after(ask)
    start = 0
    if after is not None:
        name, number = after
        start = next((i for i, r in enumerate(rows)
                      if (r["name"], -r["version"]) > (name, -number)), len(rows))
    cut = rows[start:start + ask.limit]
    more = start + ask.limit < len(rows)
    last = cut[-1] if cut else None
    return ([aged(r, now) for r in cut],
            encode(f"{last['name']}@{last['version']}") if more and last else None)


def of_name(rows: list[dict[str, Any]], name: str, now: float) -> list[dict[str, Any]]:
    found = [aged(r, now) for r in rows if r["name"] == name]
    if not found:
        raise NotFound(f"unknown image {name!r}")
    return found


def on_host(store: Store, host: str, parsed: Parsed | None, now: float
            ) -> list[dict[str, Any]]:
    """The images ``host`` holds or was pushed, by digest: the catalogue's names and
    versions for each (none: an image the catalogue does not have, or no longer)."""
    recorded = {str(d): str(at) for d, at in store.db.execute(
        "SELECT digest, at FROM image_hosts WHERE host = ?", (host,)).fetchall()}
    sizes = dict(parsed.images) if parsed is not None and parsed.images is not None else {}
    names: dict[str, list[dict[str, Any]]] = defaultdict(list)
    seen = set()
    for image in images.versions(store):
        names[image.digest].append({"name": image.name, "version": image.version,
                                    "newest": image.name not in seen, "kind": image.kind,
                                    "file_bytes": image.file_bytes})
        seen.add(image.name)
    listed = parsed is not None and parsed.images is not None
    out = []
    for digest in sorted(set(recorded) | set(sizes)):
        at = recorded.get(digest)
        in_snapshot = (digest in sizes) if listed else None
        taken_at = None if parsed is None else parsed.taken_at
        catalogued = names.get(digest, [])
        out.append({"digest": digest, "names": catalogued,
                    "size": sizes.get(digest, catalogued[0]["file_bytes"] if catalogued
                                      else None),
                    "held": held(None if at is None else recorded_epoch(at), taken_at,
                                 in_snapshot),
                    "recorded_at": at, "in_snapshot": in_snapshot, "taken_at": taken_at,
                    "age_s": None if taken_at is None else round(max(0.0, now - taken_at), 3)})
    return out
