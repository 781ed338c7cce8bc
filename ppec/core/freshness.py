"""Whether a stored host snapshot can be believed: the one rule every view applies.

A snapshot is ``fresh`` while it is young; past ``fresh_for`` it is ``stale``. But age is
not the only way to be wrong: a snapshot taken before the store's last VM change on its
host (a create, a delete, a start or stop, a move, by this ppec or another) still counts
what the host held before, however young it is. That one is ``changed``: the CLI's
`host list`, `capacity`, `host show`, the API, the web UI and `/metrics` all say so (with
the change's time), and placement asks the host again rather than trust it. A host whose
last poll failed is ``failed``; one never seen is ``none``.

The change time is the operator's clock (``hosts.vms_changed_at``, written in the same
transaction as the VM row); the snapshot's is the agent's. A host clock behind the
operator's makes a snapshot look older than it is: ``changed`` until the next one, the
safe side.
"""

from __future__ import annotations

FRESH, STALE, CHANGED, FAILED, NONE = "fresh", "stale", "changed", "failed", "none"
STATES = (FRESH, STALE, CHANGED, FAILED, NONE)


def snapshot_state(taken_at: float | None, now: float, fresh_for: float,
                   changed_at: float | None = None, failed: bool = False) -> str:
    """fresh | stale | changed | failed | none."""
    if failed:
        return FAILED
    if taken_at is None:
        return NONE
    if changed_at is not None and taken_at <= changed_at:
        return CHANGED
    return STALE if now - taken_at > fresh_for else FRESH


# The same rule as SQL over ``s.taken_at`` (the snapshot), ``h.vms_changed_at`` (the
# host) and ``st.state`` (its last poll), for the API's `?state=` filter: a page is
# selected in the store, not filtered after it is read. ``?`` is ``now - fresh_for``.
SQL = {
    FAILED: ("st.state = 'failed'", False),
    NONE: ("(st.state IS NULL OR st.state <> 'failed') AND s.taken_at IS NULL", False),
    CHANGED: ("(st.state IS NULL OR st.state <> 'failed') AND s.taken_at IS NOT NULL "
              "AND s.taken_at <= h.vms_changed_at", False),
    STALE: ("(st.state IS NULL OR st.state <> 'failed') AND s.taken_at < ? "
            "AND (h.vms_changed_at IS NULL OR s.taken_at > h.vms_changed_at)", True),
    FRESH: ("(st.state IS NULL OR st.state <> 'failed') AND s.taken_at >= ? "
            "AND (h.vms_changed_at IS NULL OR s.taken_at > h.vms_changed_at)", True),
}
