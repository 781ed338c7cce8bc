"""A fleet's snapshots as arrays, so one decision over 10,000 hosts is a few vector ops.

Every mask here is the vector form of a filter in ``filters``; for ``numa`` it is a
necessary condition only (some node, or all nodes together, have the CPUs and memory), and
the exact ``ppec.numa.fit`` runs on the few hosts the ranking puts first.

Sequential placements ask the same shape again and again while one host changes at a
time, so what depends on a host and the request's size only (the resources and NUMA
masks, marginal watts, utilization, the NUMA hole) is kept per request shape and
recomputed for the updated rows alone; exact NUMA fits are kept per host snapshot. Every
cached value is computed by the same vector code as a fresh one, so decisions are the
same bit for bit (tests/placement/test_equivalence.py). An index is not thread-safe.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from ppec.numa import NoFit
from ppec.numa import Request as NumaRequest
from ppec.placement.filters import image_reason, network_reason, numa_verdict
from ppec.placement.model import SPREADS, HostSnapshot, Policy, Request
from ppec.placement.rowrule import Codes, RowRule

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
        self.network = RowRule(lambda h, r: network_reason(h, r) is None,
                               key=lambda r: r.nic_vrfs)
        self.image = RowRule(lambda h, r: image_reason(h, r) is None,
                             key=lambda r: (r.images, r.push_images))
        self._shapes: dict[tuple[int, int, int, bool, bool], _Shape] = {}
        # Per row: each NUMA request's exact fit, and the numa filter's reason if it fails.
        self._fits: list[dict[NumaRequest, tuple[NoFit | None, str | None]]] = \
            [{} for _ in range(n)]

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
        self._fits[i] = {}
        self.network.changed(i)
        self.image.changed(i)
        for shape in self._shapes.values():
            shape.dirty.add(i)

    def numa_fit(self, h: HostSnapshot, req: NumaRequest) -> NoFit | None:
        """``ppec.numa.fit``'s verdict for ``h`` (None: fits), remembered while ``h`` is
        this index's snapshot."""
        i = self.pos.get(h.name)
        if i is None or self.hosts[i] is not h:
            return numa_verdict(h, req)
        return self._verdict(i, req)[0]

    def numa_reason(self, row: int, req: NumaRequest) -> str | None:
        """The numa filter's reason for rejecting ``row`` (``filters`` words it the same)."""
        return self._verdict(row, req)[1]

    def _verdict(self, i: int, req: NumaRequest) -> tuple[NoFit | None, str | None]:
        known = self._fits[i]
        got = known.get(req)
        if got is None:
            h = self.hosts[i]
            why = numa_verdict(h, req)
            got = known[req] = (why, None if why is None else f"{h.name}: NUMA: {why}")
        return got

    def shape(self, req: Request) -> _Shape:
        """The per-host arrays that depend on the request's size, current for every row."""
        shared = req.numa is None or req.numa.policy == "shared"
        key = (req.vcpus, req.memory_mib, req.disk_bytes, shared,
               not shared and req.numa is not None and req.numa.numa_nodes == 1)
        got = self._shapes.get(key)
        if got is None:
            if len(self._shapes) >= _SHAPES_KEPT:
                del self._shapes[next(iter(self._shapes))]
            got = self._shapes[key] = _Shape(self, req, np.arange(len(self.hosts)))
        elif got.dirty:
            got.refresh(self, req)
        return got

    # -- masks: one per filter ---------------------------------------------------------------

    def masks(self, req: Request, policy: Policy, now: float,
              ha_taken: Mapping[str, str], free_ips: Mapping[str, int] | None
              ) -> dict[str, Bools]:
        """Every filter's mask, one entry per rule (all True where a rule does not apply)."""
        n = len(self.hosts)
        got = self._masks(req, policy, now, ha_taken, free_ips)
        return {rule: got[rule].copy() if rule in got else np.ones(n, np.bool_)
                for rule in ("state", "region", "vrf", "network", "image", "tags",
                             "resources", "ha", "ip", "numa")}

    def passing(self, req: Request, policy: Policy, now: float,
                ha_taken: Mapping[str, str], free_ips: Mapping[str, int] | None) -> Ints:
        """Rows every mask lets through."""
        got = iter(self._masks(req, policy, now, ha_taken, free_ips).values())
        ok = next(got) & next(got)          # state and resources always apply
        for m in got:
            ok &= m
        return np.flatnonzero(ok)

    def _masks(self, req: Request, policy: Policy, now: float,
               ha_taken: Mapping[str, str], free_ips: Mapping[str, int] | None
               ) -> dict[str, Bools]:
        """The masks of the rules that apply; the cached ones are shared, not copies."""
        shape = self.shape(req)
        m: dict[str, Bools] = {}
        m["state"] = self.usable & (now - self.taken_at <= policy.stale_after)
        m["resources"] = shape.resources
        if req.region:
            m["region"] = self.region_code == self.region.get(req.region)
        if req.vrf:
            m["vrf"] = self.vrf_code == self.vrf.get(req.vrf)
        m["network"] = self.network.mask(self.hosts, req)
        m["image"] = self.image.mask(self.hosts, req)
        if req.tags:
            m["tags"] = self._tags(req.tags)
        if req.ha_group and ha_taken:
            codes = self.spread[req.spread]
            taken = np.array([codes.get(k) for k in ha_taken], np.int64)
            m["ha"] = ~np.isin(self.spread_code[req.spread], taken)
        if free_ips is not None:
            have = np.array([free_ips.get(v, 0) > 0 for v in self.vrf.ids] or [False])
            m["ip"] = have[self.vrf_code]
        if shape.numa is not None:
            m["numa"] = shape.numa
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

    def resources(self, req: Request, rows: Ints) -> Bools:
        res = ((req.memory_mib <= self.free_mib[rows]) & (req.disk_bytes <= self.storage[rows])
               & (req.vcpus <= self.pool[rows]))
        if req.numa is None or req.numa.policy == "shared":
            res &= (self.shared_vcpus[rows] + req.vcpus
                    <= self.overcommit[rows] * self.pool[rows])
        return np.asarray(res)

    def numa_possible(self, req: Request, rows: Ints) -> Bools:
        assert req.numa is not None
        node_cpus, node_mib = self.node_cpus[rows], self.node_mib[rows]
        # A dedicated VM takes at least its vCPUs from the pool: fit refuses it when the
        # shared VMs' vCPUs exceed overcommit times what that leaves.
        room = self.shared_vcpus[rows] <= self.overcommit[rows] * (self.pool[rows]
                                                                   - req.vcpus)
        one = np.any((node_cpus >= req.vcpus) & (node_mib >= req.memory_mib), axis=1)
        if req.numa.numa_nodes == 1:
            return np.asarray(one & room)
        free_cpus = np.where(node_cpus > 0, node_cpus, 0).sum(axis=1)
        free_mib = np.where(node_mib > 0, node_mib, 0).sum(axis=1)
        return np.asarray(room & (one | ((free_cpus >= req.vcpus)
                                         & (free_mib >= req.memory_mib))))

    # -- weighers ------------------------------------------------------------------------

    def weigh(self, req: Request, policy: Policy, rows: Ints,
              group_count: Mapping[str, int]) -> tuple[Floats, dict[str, Floats]]:
        """Each weigher's score in [0, 1] for ``rows``, and the weighted total."""
        shape = self.shape(req)
        w = policy.weights
        scores: dict[str, Floats] = {}
        scores["cost"] = _low_is_good(self.cost[rows])
        scores["power"] = _low_is_good(shape.watts[rows])
        util = shape.util[rows]
        scores["pack"] = util if policy.strategy == "pack" else 1 - util
        scores["numa"] = shape.hole[rows]
        counts = np.array([group_count.get(self.hosts[int(i)].name, 0) for i in rows],
                          np.float64) if group_count else np.zeros(len(rows))
        scores["anti_affinity"] = 1.0 / (1.0 + counts)
        total = (w.cost * scores["cost"] + w.power * scores["power"] + w.pack * scores["pack"]
                 + w.numa * scores["numa"] + w.anti_affinity * scores["anti_affinity"])
        if req.images:   # holding the VM's images spares a push before the build
            scores["image"] = np.fromiter((req.images <= self.hosts[int(i)].images
                                           for i in rows), np.float64, len(rows))
            total = total + w.image * scores["image"]
        return total, scores

    def utilization(self, req: Request, rows: Ints) -> Floats:
        """The larger of CPU and memory use after placing the VM, in [0, 1]."""
        util = np.maximum(
            (self.dedicated[rows] + self.shared_vcpus[rows] / np.maximum(self.overcommit[rows],
                                                                         1e-9)
             + req.vcpus) / np.maximum(self.cpus[rows], 1),
            1 - (self.free_mib[rows] - req.memory_mib) / np.maximum(self.memory[rows], 1))
        return np.asarray(np.clip(util, 0.0, 1.0), np.float64)

    def marginal_watts(self, req: Request, rows: Ints) -> Floats:
        """Power the VM adds: a host with no VMs must first wake (its idle draw)."""
        per_cpu = (self.max_w[rows] - self.idle_w[rows]) / np.maximum(self.cpus[rows], 1)
        wake = np.where(self.vms[rows] == 0, self.idle_w[rows], 0.0)
        return np.asarray(wake + per_cpu * req.vcpus, np.float64)

    def hole_after(self, req: Request, rows: Ints) -> Floats:
        """Largest free NUMA node (CPUs) left after the VM takes its best-fit node."""
        cpus = self.node_cpus[rows]
        if cpus.shape[1] == 0:   # no host knows a NUMA node (all unreachable): no holes
            return np.zeros(len(rows), np.float64)
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


_SHAPES_KEPT = 16      # request shapes whose arrays an index keeps current
_NO_FIT = int(np.iinfo(np.int64).max)


class _Shape:
    """One request shape's per-host arrays, each row computed by the same vector code
    whether it is computed for every host or only for the rows updated since."""

    def __init__(self, index: FleetIndex, req: Request, rows: Ints) -> None:
        n = len(index.hosts)
        self.dirty: set[int] = set()
        self.resources = np.zeros(n, np.bool_)
        dedicated = req.numa is not None and req.numa.policy != "shared"
        self.numa: Bools | None = np.zeros(n, np.bool_) if dedicated else None
        self.watts = np.zeros(n)
        self.util = np.zeros(n)
        self.hole = np.zeros(n)      # the numa weigher's score: hole / largest node
        self._compute(index, req, rows)

    def refresh(self, index: FleetIndex, req: Request) -> None:
        if len(self.dirty) == 1:
            self._compute_row(index, req, self.dirty.pop())
            return
        rows = np.fromiter(sorted(self.dirty), np.int64, len(self.dirty))
        self.dirty.clear()
        self._compute(index, req, rows)

    def _compute_row(self, ix: FleetIndex, req: Request, i: int) -> None:
        """``_compute`` for one row in plain Python, twenty times cheaper than numpy on
        one-element arrays. The same IEEE operations in the same order (integers far below
        2**53, so int-to-float conversions are exact), hence the same values, which
        tests/placement/test_equivalence.py checks against arrays built whole."""
        v, mem = req.vcpus, req.memory_mib
        free_mib, pool, cpus = int(ix.free_mib[i]), int(ix.pool[i]), int(ix.cpus[i])
        overcommit, shared_vcpus = float(ix.overcommit[i]), int(ix.shared_vcpus[i])
        res = mem <= free_mib and req.disk_bytes <= int(ix.storage[i]) and v <= pool
        if self.numa is None:
            res = res and shared_vcpus + v <= overcommit * pool
        self.resources[i] = res
        node_cpus = ix.node_cpus[i].tolist()
        node_mib = ix.node_mib[i].tolist()
        fits = [c >= v and m >= mem for c, m in zip(node_cpus, node_mib, strict=True)]
        if self.numa is not None:
            possible = any(fits)
            if not possible and not (req.numa is not None and req.numa.numa_nodes == 1):
                possible = (sum(c for c in node_cpus if c > 0) >= v
                            and sum(m for m in node_mib if m > 0) >= mem)
            self.numa[i] = possible and shared_vcpus <= overcommit * (pool - v)
        idle_w, max_w = float(ix.idle_w[i]), float(ix.max_w[i])
        wake = idle_w if int(ix.vms[i]) == 0 else 0.0
        self.watts[i] = wake + (max_w - idle_w) / max(cpus, 1) * v
        util = max((int(ix.dedicated[i]) + shared_vcpus / max(overcommit, 1e-9) + v)
                   / max(cpus, 1),
                   1 - (free_mib - mem) / max(int(ix.memory[i]), 1))
        self.util[i] = min(max(util, 0.0), 1.0)
        if self.numa is None:
            hole = max(node_cpus)
        elif any(fits):
            slack = [c - v if f else _NO_FIT for c, f in zip(node_cpus, fits, strict=True)]
            after = list(node_cpus)
            after[slack.index(min(slack))] -= v
            hole = max(after)
        else:
            hole = 0
        self.hole[i] = float(hole) / max(int(ix.node_size[i]), 1)

    def _compute(self, index: FleetIndex, req: Request, rows: Ints) -> None:
        if not len(rows):
            return
        self.resources[rows] = index.resources(req, rows)
        if self.numa is not None:
            self.numa[rows] = index.numa_possible(req, rows)
        self.watts[rows] = index.marginal_watts(req, rows)
        self.util[rows] = index.utilization(req, rows)
        self.hole[rows] = index.hole_after(req, rows) / np.maximum(index.node_size[rows], 1)


def best_first(total: Floats) -> Iterator[int]:
    """Positions in ``total`` from the highest, ties to the lowest position: the order of
    ``np.argsort(-total, kind="stable")``, sorting only as far as the caller reads.

    Each round takes every position whose value reaches the k-th best (ties included, so
    the set is always a prefix of the full order) and sorts just those; k grows fourfold
    when the caller reads past them.
    """
    neg = -total
    n = len(neg)
    if not np.isfinite(neg).all():      # NaN and infinities: let one full sort order them
        yield from (int(j) for j in np.argsort(neg, kind="stable"))
        return
    done, k = 0, _FIRST_ROUND
    while done < n:
        if k < n:
            kth = neg[np.argpartition(neg, k - 1)[k - 1]]
            head = np.flatnonzero(neg <= kth)          # ascending positions
        else:
            head = np.arange(n)
        order = head[np.argsort(neg[head], kind="stable")]
        yield from (int(j) for j in order[done:])
        done, k = len(order), k * 4


_FIRST_ROUND = 8      # hosts ranked in the first round: a decision usually needs 3


def _low_is_good(values: Floats) -> Floats:
    if len(values) == 0:
        return np.ones(0)
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-12:
        return np.ones(len(values))
    return np.asarray(1.0 - (values - lo) / (hi - lo), np.float64)
