"""``ppec audit verify``: the chain, the hosts' anchors and the requests table, together.

The chain alone (``audit.verify``) catches an edit, a deletion in the middle or a swap by
someone who does not recompute hashes. Someone who can write the store can also truncate
the chain or rewrite it whole; what they cannot write are the hosts' ledgers, where each
approved execution left the chain head it came with (``audit.anchors``), nor make the
requests table lose its rows' trail without it showing (docs/design.md, "Audit anchors").
"""

from __future__ import annotations

from typing import Any

from ppec.operator import audit
from ppec.operator.context import Context
from ppec.operator.fleet.client import fan_out
from ppec.operator.store import Host

# The entries each state of a request implies, by action (see makerchecker).
TRAIL: dict[str, tuple[str, ...]] = {
    "pending": ("request",),
    "approved": ("request", "approve"),
    "rejected": ("request", "reject"),
    "cancelled": ("request", "cancel"),
    "executed": ("request", "approve", "execute", "executed"),
    "failed": ("request", "approve", "execute", "failed"),
}


def _problem(kind: str, message: str, **where: Any) -> dict[str, Any]:
    return {"kind": kind, "message": message, **where}


def _chain(store: Any) -> tuple[int, dict[str, Any] | None]:
    try:
        return audit.verify(store), None
    except audit.AuditBroken as e:
        return len(audit.entries(store)), _problem("chain", e.message, **e.details)


def _anchors(host: str, anchors: list[dict[str, Any]],
             by_seq: dict[int, str]) -> dict[str, Any] | None:
    """The first anchor of ``host`` the chain does not hold as it was."""
    end = max(by_seq, default=0)
    for a in anchors:
        seq = int(a["seq"])
        if seq not in by_seq:
            return _problem("truncated", f"host {host} anchored audit entry {seq} (executing "
                            f"request {a['digest'][:12]}… at {a['at']}), but the chain ends "
                            f"at entry {end}: entries were removed, or the store was "
                            f"restored from an older backup", host=host, seq=seq)
        if by_seq[seq] != a["hash"]:
            return _problem("rewritten", f"audit entry {seq} (or one before it) is not the "
                            f"one host {host} "
                            f"anchored at {a['at']} (hash {by_seq[seq][:12]}… here, "
                            f"{str(a['hash'])[:12]}… there): the chain was rewritten",
                            host=host, seq=seq)
    return None


def _requests(store: Any, log: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first request whose state implies an entry the log lacks."""
    have: dict[int, set[str]] = {}
    for e in log:
        if e["request_id"] is not None:
            have.setdefault(int(e["request_id"]), set()).add(str(e["action"]))
    with store.transaction() as db:
        rows = db.execute("SELECT id, state FROM requests ORDER BY id").fetchall()
    for rid, state in rows:
        missing = [a for a in TRAIL.get(str(state), ()) if a not in have.get(int(rid), set())]
        if missing:
            return _problem("missing", f"request {rid} is {state} but the audit log has no "
                            f"{', '.join(repr(m) for m in missing)} entry for it",
                            request_id=int(rid), actions=missing)
    return None


def check(ctx: Context) -> dict[str, Any]:
    """{"entries", "intact", "anchors": {host: {"checked", "ok", "error"?}}, "problem"};
    the problem is the first found: the chain's, then the hosts' (in inventory order),
    then the requests table's."""
    count, problem = _chain(ctx.store)
    log = audit.entries(ctx.store)
    by_seq = {int(e["seq"]): str(e["hash"]) for e in log}
    hosts = ctx.store.hosts()

    def ask(host: Host) -> list[dict[str, Any]]:
        anchors: list[dict[str, Any]] = ctx.client(host).call("audit.anchors")["anchors"]
        return anchors

    report: dict[str, dict[str, Any]] = {}
    for r in fan_out(hosts, ask):
        if not r.ok:
            report[r.host] = {"checked": 0, "ok": False, "error": str(r.error)}
            continue
        found = _anchors(r.host, r.value, by_seq)
        report[r.host] = {"checked": len(r.value), "ok": found is None}
        problem = problem or found
    problem = problem or _requests(ctx.store, log)
    return {"entries": count, "intact": problem is None, "anchors": report,
            "problem": problem}
