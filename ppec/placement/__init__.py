"""Choosing a host for a VM. Pure: snapshots and a request in, a ranking and reasons out.

    >>> from ppec.placement import FleetIndex, HostSnapshot, Request, place
    >>> decision = place(FleetIndex(snapshots), Request(vcpus=4, memory_mib=8192), now=t)
    >>> decision.host, [r.reason for r in decision.rejected]

Filters (``filters.FILTERS``, in order): state (drained, unreachable, stale snapshot),
region, VRF, tags, resources (memory, disk, CPUs; shared overcommit), HA anti-affinity (hard,
at host, rack or power-domain level), a free IP in the host's VRF, NUMA fit (ppec.numa).
Weighers (``index.FleetIndex.weigh``), each scored in [0, 1] and multiplied by
``Policy.weights``: cost, power (waking an idle host costs its idle draw), pack or spread,
NUMA holes left, soft anti-affinity. The best hosts are checked exactly, in rank order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ppec.placement.filters import FILTERS, Context, check, check_all
from ppec.placement.index import FleetIndex
from ppec.placement.model import (
    SPREADS,
    Candidate,
    Decision,
    HostSnapshot,
    Policy,
    Rejection,
    Request,
    Spread,
    Summary,
    Weights,
)

__all__ = ["FILTERS", "SPREADS", "Candidate", "Decision", "FleetIndex", "HostSnapshot",
           "Policy", "Rejection", "Request", "Spread", "Summary", "Weights", "explain",
           "place"]


def _notes(index: FleetIndex, req: Request, row: int) -> tuple[str, ...]:
    h = index.hosts[row]
    watts = float(index.marginal_watts(req, np.array([row]))[0])
    busy = "idle: waking it" if h.summary.vms == 0 else "busy: the VM"
    return (f"cost {h.cost:g}/h", f"{busy} adds {watts:.0f} W")


def place(index: FleetIndex, req: Request, *, now: float, policy: Policy | None = None,
          ha_taken: Mapping[str, str] | None = None,
          group_count: Mapping[str, int] | None = None,
          free_ips: Mapping[str, int] | None = None) -> Decision:
    """Up to ``policy.max_candidates`` hosts, best first, each passing every filter.

    ``ha_taken`` maps spread keys (host, rack or power domain, as ``req.spread`` says)
    already used by ``req.ha_group`` to the member there; ``group_count`` counts the
    group's members per host (soft anti-affinity); ``free_ips`` maps VRF to free
    addresses (None when there is no IP database).
    """
    policy = policy or Policy()
    ha_taken = ha_taken or {}
    masks = index.masks(req, policy, now, ha_taken, free_ips)
    ok = np.ones(len(index.hosts), np.bool_)
    for m in masks.values():
        ok &= m
    rows = np.flatnonzero(ok)
    ctx = Context(req, policy, now, ha_taken, free_ips)
    ranked: list[Candidate] = []
    rejected: list[Rejection] = []
    examined = 0
    if len(rows):
        total, scores = index.weigh(req, policy, rows, group_count or {})
        order = np.argsort(-total, kind="stable")
        for j in order:
            row = int(rows[j])
            examined += 1
            why = check(index.hosts[row], ctx)        # exact, NUMA included
            if why is not None:
                rejected.append(why)
                continue
            ranked.append(Candidate(index.hosts[row].name, float(total[j]),
                                    tuple((k, float(v[j])) for k, v in scores.items()),
                                    _notes(index, req, row)))
            if len(ranked) >= policy.max_candidates:
                break
    if not ranked:   # say why for every host, not only the ones the masks let through
        rejected = [r for h in index.hosts if (r := check(h, ctx)) is not None]
        examined = len(index.hosts)
    return Decision(tuple(ranked), tuple(rejected), examined)


def explain(index: FleetIndex, req: Request, *, now: float, policy: Policy | None = None,
            ha_taken: Mapping[str, str] | None = None,
            group_count: Mapping[str, int] | None = None,
            free_ips: Mapping[str, int] | None = None) -> list[dict[str, object]]:
    """Every host: each filter's verdict and reason, each weigher's score, the rank."""
    policy = policy or Policy()
    ctx = Context(req, policy, now, ha_taken or {}, free_ips)
    rows = []
    for i, h in enumerate(index.hosts):
        verdicts = check_all(h, ctx)
        rows.append({"host": h.name, "filters": verdicts,
                     "passed": all(v is None for v in verdicts.values()), "row": i})
    passing = np.array([r["row"] for r in rows if r["passed"]], np.int64)
    ranks: dict[int, tuple[int, float, dict[str, float], tuple[str, ...]]] = {}
    if len(passing):
        total, scores = index.weigh(req, policy, passing, group_count or {})
        for rank, j in enumerate(np.argsort(-total, kind="stable"), start=1):
            row = int(passing[j])
            ranks[row] = (rank, float(total[j]), {k: float(v[j]) for k, v in scores.items()},
                          _notes(index, req, row))
    out: list[dict[str, object]] = []
    for r in rows:
        row = int(r["row"])  # type: ignore[call-overload]
        rank, score, weights, notes = ranks.get(row, (0, 0.0, {}, ()))
        out.append({"host": r["host"], "passed": r["passed"], "filters": r["filters"],
                    "rank": rank or None, "score": round(score, 4) if rank else None,
                    "weights": {k: round(v, 4) for k, v in weights.items()},
                    "notes": list(notes)})
    return sorted(out, key=lambda r: (r["rank"] is None, r["rank"] or 0, str(r["host"])))
