"""Placement as it was before it was made faster (commit 7343024), kept as the oracle:
the FleetIndex that recomputes every array on every decision, and place/explain over it.
tests/placement/test_equivalence.py holds ppec.placement to giving exactly these decisions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from ppec.placement.filters import Context, check, check_all
from ppec.placement.model import (
    SPREADS,
    Candidate,
    Decision,
    HostSnapshot,
    Policy,
    Rejection,
    Request,
)
from ppec.placement.rowrule import Codes

Bools = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


class FleetIndex:
    def __init__(self, hosts: Sequence[HostSnapshot]) -> None:
        self.hosts = list(hosts)
        self.pos = {h.name: i for i, h in enumerate(self.hosts)}
        n = len(self.hosts)
        k = max((len(h.topology.cells) for h in self.hosts), default=1)
        self.region, self.vrf, self.tag = Codes(), Codes(), Codes()
        self.spread = {level: Codes() for level in SPREADS}
        self.region_code = np.zeros(n, np.int64)
        self.vrf_code = np.zeros(n, np.int64)
        self.spread_code = {level: np.zeros(n, np.int64) for level in SPREADS}
        self.tags: list[frozenset[str]] = [frozenset()] * n
        self.tag_bits = np.zeros(n, np.uint64)
        self.usable = np.ones(n, np.bool_)          # not drained, reachable
        self.taken_at = np.zeros(n)
        self.cost = np.zeros(n)
        self.idle_w = np.zeros(n)
        self.max_w = np.zeros(n)
        self.overcommit = np.zeros(n)
        self.storage = np.zeros(n, np.int64)
        self.cpus = np.zeros(n, np.int64)
        self.pool = np.zeros(n, np.int64)
        self.dedicated = np.zeros(n, np.int64)
        self.shared_vcpus = np.zeros(n, np.int64)
        self.memory = np.zeros(n, np.int64)
        self.free_mib = np.zeros(n, np.int64)
        self.vms = np.zeros(n, np.int64)
        self.node_cpus = np.full((n, k), -1, np.int64)
        self.node_mib = np.full((n, k), -1, np.int64)
        self.node_size = np.ones(n, np.int64)
        for i, h in enumerate(self.hosts):
            self._fill(i, h)

    def _fill(self, i: int, h: HostSnapshot) -> None:
        s = h.summary
        self.region_code[i] = self.region(h.region)
        self.vrf_code[i] = self.vrf(h.vrf)
        for level in SPREADS:
            self.spread_code[level][i] = self.spread[level](h.spread_key(level))
        self.tags[i] = h.tags
        bits = 0
        for t in h.tags:
            code = self.tag(t)
            if code < 64:
                bits |= 1 << code
        self.tag_bits[i] = np.uint64(bits)
        self.usable[i] = not h.drained and h.reachable
        self.taken_at[i] = h.taken_at
        self.cost[i], self.idle_w[i], self.max_w[i] = h.cost, h.power_idle_w, h.power_max_w
        self.overcommit[i] = h.overcommit
        self.storage[i] = h.storage_free_bytes
        self.cpus[i], self.pool[i], self.dedicated[i] = s.cpus, s.pool, s.dedicated
        self.shared_vcpus[i] = s.shared_vcpus
        self.memory[i], self.free_mib[i], self.vms[i] = s.memory_mib, s.free_mib, s.vms
        self.node_cpus[i, :] = -1
        self.node_mib[i, :] = -1
        self.node_cpus[i, :len(s.node_free_cpus)] = s.node_free_cpus
        self.node_mib[i, :len(s.node_free_mib)] = s.node_free_mib
        self.node_size[i] = max((len(c.cpus) for c in h.topology.cells), default=1)

    def update(self, h: HostSnapshot) -> None:
        """Replace one host's snapshot (after a placement), keeping the rest."""
        i = self.pos[h.name]
        self.hosts[i] = h
        self._fill(i, h)

    # -- masks: one per filter ---------------------------------------------------------------

    def masks(self, req: Request, policy: Policy, now: float,
              ha_taken: Mapping[str, str], free_ips: Mapping[str, int] | None
              ) -> dict[str, Bools]:
        n = len(self.hosts)
        every = np.ones(n, np.bool_)
        m: dict[str, Bools] = {}
        m["state"] = self.usable & (now - self.taken_at <= policy.stale_after)
        m["region"] = every if not req.region else \
            self.region_code == self.region.get(req.region)
        m["vrf"] = every if not req.vrf else self.vrf_code == self.vrf.get(req.vrf)
        m["network"] = np.array([all(v in h.networks for v in [h.vrf, *req.nic_vrfs] if v)
                                 for h in self.hosts], np.bool_)
        m["image"] = np.array([req.push_images or all(d in h.images for d in req.images)
                               for h in self.hosts], np.bool_)
        m["tags"] = self._tags(req.tags)
        shared = req.numa is None or req.numa.policy == "shared"
        res = ((req.memory_mib <= self.free_mib) & (req.disk_bytes <= self.storage)
               & (req.vcpus <= self.pool))
        if shared:
            res &= self.shared_vcpus + req.vcpus <= self.overcommit * self.pool
        m["resources"] = res
        if req.ha_group and ha_taken:
            codes = self.spread[req.spread]
            taken = np.array([codes.get(k) for k in ha_taken], np.int64)
            m["ha"] = ~np.isin(self.spread_code[req.spread], taken)
        else:
            m["ha"] = every
        if free_ips is None:
            m["ip"] = every
        else:
            have = np.array([free_ips.get(v, 0) > 0 for v in self.vrf.ids] or [False])
            m["ip"] = have[self.vrf_code]
        m["numa"] = every if shared else self._numa_possible(req)
        return m

    def _tags(self, wanted: frozenset[str]) -> Bools:
        if not wanted:
            return np.ones(len(self.hosts), np.bool_)
        codes = [self.tag.get(t) for t in wanted]
        if -1 in codes:
            return np.zeros(len(self.hosts), np.bool_)
        if max(codes) < 64:
            bits = np.uint64(sum(1 << c for c in codes))
            return np.asarray((self.tag_bits & bits) == bits)
        return np.array([wanted <= t for t in self.tags], np.bool_)

    def _numa_possible(self, req: Request) -> Bools:
        assert req.numa is not None
        # Since issue 27 the NUMA mask also holds fit's overcommit condition for a
        # dedicated VM (a necessary condition still: test_properties holds it so); the
        # oracle keeps the same definition, recomputed whole.
        room = self.shared_vcpus <= self.overcommit * (self.pool - req.vcpus)
        one = np.any((self.node_cpus >= req.vcpus) & (self.node_mib >= req.memory_mib), axis=1)
        if req.numa.numa_nodes == 1:
            return np.asarray(one & room)
        free_cpus = np.where(self.node_cpus > 0, self.node_cpus, 0).sum(axis=1)
        free_mib = np.where(self.node_mib > 0, self.node_mib, 0).sum(axis=1)
        return np.asarray(room & (one | ((free_cpus >= req.vcpus)
                                         & (free_mib >= req.memory_mib))))

    # -- weighers ------------------------------------------------------------------------

    def weigh(self, req: Request, policy: Policy, rows: Ints,
              group_count: Mapping[str, int]) -> tuple[Floats, dict[str, Floats]]:
        """Each weigher's score in [0, 1] for ``rows``, and the weighted total."""
        w = policy.weights
        scores: dict[str, Floats] = {}
        scores["cost"] = _low_is_good(self.cost[rows])
        scores["power"] = _low_is_good(self.marginal_watts(req, rows))
        util = np.maximum(
            (self.dedicated[rows] + self.shared_vcpus[rows] / np.maximum(self.overcommit[rows],
                                                                         1e-9)
             + req.vcpus) / np.maximum(self.cpus[rows], 1),
            1 - (self.free_mib[rows] - req.memory_mib) / np.maximum(self.memory[rows], 1))
        util = np.clip(util, 0.0, 1.0)
        scores["pack"] = util if policy.strategy == "pack" else 1 - util
        scores["numa"] = self.hole_after(req, rows) / np.maximum(self.node_size[rows], 1)
        counts = np.array([group_count.get(self.hosts[int(i)].name, 0) for i in rows],
                          np.float64) if group_count else np.zeros(len(rows))
        scores["anti_affinity"] = 1.0 / (1.0 + counts)
        total = (w.cost * scores["cost"] + w.power * scores["power"] + w.pack * scores["pack"]
                 + w.numa * scores["numa"] + w.anti_affinity * scores["anti_affinity"])
        if req.images:
            scores["image"] = np.array([float(all(d in self.hosts[int(i)].images
                                                  for d in req.images)) for i in rows])
            total = total + w.image * scores["image"]
        return total, scores

    def marginal_watts(self, req: Request, rows: Ints) -> Floats:
        """Power the VM adds: a host with no VMs must first wake (its idle draw)."""
        per_cpu = (self.max_w[rows] - self.idle_w[rows]) / np.maximum(self.cpus[rows], 1)
        wake = np.where(self.vms[rows] == 0, self.idle_w[rows], 0.0)
        return np.asarray(wake + per_cpu * req.vcpus, np.float64)

    def hole_after(self, req: Request, rows: Ints) -> Floats:
        """Largest free NUMA node (CPUs) left after the VM takes its best-fit node."""
        cpus = self.node_cpus[rows]
        if req.numa is None or req.numa.policy == "shared":
            return np.asarray(cpus.max(axis=1), np.float64)
        fits = (cpus >= req.vcpus) & (self.node_mib[rows] >= req.memory_mib)
        slack = np.where(fits, cpus - req.vcpus, np.iinfo(np.int64).max)
        best = slack.argmin(axis=1)
        after = cpus.copy()
        idx = np.arange(len(rows))
        has_fit = fits.any(axis=1)
        after[idx[has_fit], best[has_fit]] -= req.vcpus
        # A split spends the VM's CPUs across nodes: count nothing large left.
        return np.asarray(np.where(has_fit, after.max(axis=1), 0), np.float64)


def _low_is_good(values: Floats) -> Floats:
    if len(values) == 0:
        return np.ones(0)
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-12:
        return np.ones(len(values))
    return np.asarray(1.0 - (values - lo) / (hi - lo), np.float64)


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
