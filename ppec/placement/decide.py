"""A decision over a FleetIndex: the masks, the weighted ranking, the exact checks."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ppec.placement.filters import FILTERS, Context, check
from ppec.placement.index import FleetIndex, best_first
from ppec.placement.model import Candidate, Decision, Policy, Rejection, Request


def _notes(index: FleetIndex, req: Request, row: int) -> tuple[str, ...]:
    h = index.hosts[row]
    watts = float(index.shape(req).watts[row])
    busy = "idle: waking it" if h.summary.vms == 0 else "busy: the VM"
    notes: tuple[str, ...] = (f"cost {h.cost:g}/h", f"{busy} adds {watts:.0f} W")
    if h.vm_cpu_used is not None:
        # What the VMs use now, beside what they hold (the score weighs holdings: a VM
        # idle this minute may be busy the next).
        notes += (f"VMs use {h.vm_cpu_used:.1f} of {h.summary.cpus} CPUs, "
                  f"{h.vm_rss_mib or 0} MiB RSS",)
    return notes


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
    rows = index.passing(req, policy, now, ha_taken, free_ips)
    ctx = Context(req, policy, now, ha_taken, free_ips, index.numa_fit)
    ranked: list[Candidate] = []
    rejected: list[Rejection] = []
    examined = 0
    if len(rows):
        total, scores = index.weigh(req, policy, rows, group_count or {})
        numa_req = req.numa_request
        for j in best_first(total):
            row = int(rows[j])
            examined += 1
            # The masks equal every filter but numa (tests/placement/test_properties), so
            # a row they let through fails numa or nothing: the numa verdict alone
            # rejects; a host that passes it is still checked whole before it is ranked.
            reason = index.numa_reason(row, numa_req)
            why = Rejection(index.hosts[row].name, "numa", reason) if reason is not None \
                else check(index.hosts[row], ctx)
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
    ctx = Context(req, policy, now, ha_taken or {}, free_ips, index.numa_fit)
    # The masks equal the filters but numa (tests/placement/test_properties.py): a rule
    # its mask passes says None without being asked; only a rule that rejects is asked
    # for its reason, and numa always (its mask is only a necessary condition). At
    # 10,000 hosts that is two calls a host, not ten.
    masks = index.masks(req, policy, now, ha_taken or {}, free_ips)
    asked = [(rule, f, masks[rule]) for rule, f in FILTERS]
    rows = []
    for i, h in enumerate(index.hosts):
        verdicts = {rule: f(h, ctx) if rule == "numa" or not mask[i] else None
                    for rule, f, mask in asked}
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
