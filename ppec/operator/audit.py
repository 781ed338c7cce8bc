"""The audit log: append-only, each entry hashing the one before it.

``verify`` recomputes the chain; an edited byte, a deleted entry or two swapped entries
break it at the first entry that no longer follows from its predecessor.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ppec.core.clock import utc_now
from ppec.core.errors import PpecError
from ppec.operator.store import Store

GENESIS = "0" * 64


class AuditBroken(PpecError):
    code = "AUDIT_BROKEN"


def _hash(entry: dict[str, Any]) -> str:
    body = {k: entry[k] for k in ("seq", "at", "actor", "action", "request_id", "detail",
                                  "prev")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def append(store: Store, actor: str, action: str, request_id: int | None,
           detail: dict[str, Any]) -> dict[str, Any]:
    with store.transaction() as db:
        return append_in(db, actor, action, request_id, detail)


def append_in(db: Any, actor: str, action: str, request_id: int | None,
              detail: dict[str, Any]) -> dict[str, Any]:
    """Append inside the caller's transaction, so the entry and the change it records
    commit together or not at all (writers are serialized: the chain cannot fork)."""
    last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    entry = {"seq": seq, "at": utc_now("microseconds"),
             "actor": actor, "action": action, "request_id": request_id,
             "detail": json.dumps(detail, sort_keys=True), "prev": prev}
    entry["hash"] = _hash(entry)
    db.execute("INSERT INTO audit (seq, at, actor, action, request_id, detail, prev, hash)"
               " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               [entry[k] for k in ("seq", "at", "actor", "action", "request_id",
                                   "detail", "prev", "hash")])
    return entry


def entries(store: Store) -> list[dict[str, Any]]:
    with store.transaction() as db:
        rows = db.execute("SELECT seq, at, actor, action, request_id, detail, prev, hash "
                          "FROM audit ORDER BY seq").fetchall()
    keys = ("seq", "at", "actor", "action", "request_id", "detail", "prev", "hash")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def verify(store: Store) -> int:
    """The number of entries, all chained; else AuditBroken naming the first bad one."""
    prev, expect_seq = GENESIS, 1
    log = entries(store)
    for e in log:
        if e["seq"] != expect_seq:
            raise AuditBroken(f"audit entry {expect_seq} is missing (next is {e['seq']})",
                              details={"seq": expect_seq})
        if e["prev"] != prev:
            raise AuditBroken(f"audit entry {e['seq']} does not follow entry {e['seq'] - 1} "
                              f"(removed, reordered or edited)", details={"seq": e["seq"]})
        if _hash(e) != e["hash"]:
            raise AuditBroken(f"audit entry {e['seq']} was altered (its hash does not match "
                              f"its content)", details={"seq": e["seq"]})
        prev, expect_seq = e["hash"], expect_seq + 1
    return len(log)
