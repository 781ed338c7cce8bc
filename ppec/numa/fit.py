"""Fit a VM onto a host's NUMA topology, given what other VMs already hold.

Rules (docs/numa.md has the reasoning):

- ``dedicated`` VMs get host CPUs of their own: one vCPU per host CPU, pinned, memory bound
  strictly to the cells those CPUs are in. ``shared`` VMs float over the usable CPUs that no
  dedicated VM holds, up to ``overcommit`` vCPUs per CPU, memory unbound.
- One cell when the request fits in one; otherwise (``numa_nodes`` None) the fewest cells
  that fit, or exactly ``numa_nodes`` cells split evenly when the request names a count.
- Among cells that fit, the one left with the fewest free CPUs afterwards (best fit), so
  big holes stay whole elsewhere; ties go to more memory left over, then the lower id.
- Threads: ``prefer`` takes whole cores first (a VM's vCPUs on sibling threads), the odd
  remainder from already-split cores; ``isolate`` gives each vCPU a whole core and holds its
  siblings empty; ``require`` takes whole cores only, every thread of each.
- Emulator threads: ``share`` run on the VM's own CPUs; ``isolate`` get one more CPU of
  their own (a whole core under ``isolate``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from itertools import combinations

from ppec.numa.cells import CellState as _CellState
from ppec.numa.cells import Pick as _Pick
from ppec.numa.cells import capacity as _capacity
from ppec.numa.cells import pick as _pick
from ppec.numa.cells import states as _states
from ppec.numa.model import Allocation as Allocation
from ppec.numa.model import Emulator as Emulator
from ppec.numa.model import GuestCell as GuestCell
from ppec.numa.model import NoFit as NoFit
from ppec.numa.model import Plan as Plan
from ppec.numa.model import Policy as Policy
from ppec.numa.model import Request as Request
from ppec.numa.model import Threads as Threads
from ppec.numa.topology import Topology

# -- the fit -------------------------------------------------------------------------------


def fit(topo: Topology, allocations: Iterable[Allocation], request: Request,
        overcommit: float = 4.0) -> Plan | NoFit:
    allocs = list(allocations)
    if request.vcpus < 1 or request.memory_mib < 1:
        return NoFit(("a VM needs at least one vCPU and some memory",))
    states = _states(topo, allocs)
    total_mib = sum(c.memory_mib for c in topo.cells)
    used_mib = sum(mib for a in allocs for _, mib in a.memory)
    if used_mib + request.memory_mib > total_mib:
        return NoFit((f"host has {total_mib - used_mib} MiB free, needs "
                      f"{request.memory_mib} MiB",))
    shared = [a for a in allocs if a.policy == "shared"]
    shared_vcpus = sum(a.vcpus for a in shared)
    pool = frozenset(t for st in states for c in st.cores for t in c.free)
    if request.policy == "shared":
        return _fit_shared(topo, request, pool, shared_vcpus, overcommit)
    result = _fit_dedicated(states, request)
    if isinstance(result, NoFit):
        return result
    left = len(pool - result.held)
    if shared_vcpus > overcommit * left:
        return NoFit((f"taking {len(result.held)} CPUs would leave {left} for shared VMs "
                      f"that have {shared_vcpus} vCPUs (overcommit {overcommit:g})",))
    return result


def _fit_shared(topo: Topology, req: Request, pool: frozenset[int], shared_vcpus: int,
                overcommit: float) -> Plan | NoFit:
    if req.vcpus > len(pool):
        return NoFit((f"{len(pool)} CPUs are not dedicated, a shared VM of "
                      f"{req.vcpus} vCPUs needs as many",))
    if shared_vcpus + req.vcpus > overcommit * len(pool):
        return NoFit((f"shared CPUs full: {shared_vcpus} + {req.vcpus} vCPUs on {len(pool)} "
                      f"CPUs exceeds overcommit {overcommit:g}",))
    tpc = max((len(c.siblings) for cell in topo.cells for c in cell.cpus), default=1)
    return Plan("shared", (), frozenset(), (), frozenset(), pool, tpc)


def _plan(picks: Sequence[tuple[_CellState, _Pick, int]], tpc: int) -> Plan:
    """Number the guest's vCPUs cell by cell, in the order each cell's CPUs were picked."""
    cells: list[GuestCell] = []
    pins: list[int] = []
    emulator: list[int] = []
    held: set[int] = set()
    vcpu = 0
    for i, (st, pick, mib) in enumerate(picks):
        ids = tuple(range(vcpu, vcpu + len(pick.pins)))
        vcpu += len(pick.pins)
        cells.append(GuestCell(i, st.cell.id, ids, mib))
        pins.extend(pick.pins)
        emulator.extend(pick.emulator)
        held |= pick.held
    return Plan("dedicated", tuple(pins), frozenset(emulator or pins), tuple(cells),
                frozenset(held), frozenset(), _guest_threads(picks) if tpc > 1 else 1)


def _guest_threads(picks: Sequence[tuple[_CellState, _Pick, int]]) -> int:
    """Threads per guest core that tell the guest the truth about its vCPUs' siblings.

    The guest numbers threads of one core consecutively, so vCPUs 2k and 2k+1 must be
    sibling threads on the host for ``threads=2`` to be true; otherwise the guest is told 1.
    """
    sizes = set()
    for st, pick, _ in picks:
        pins = list(pick.pins)
        for core in st.cores:
            mine = [p for p in pins if p in core.threads]
            if not mine:
                continue
            if len(mine) != len(core.threads):
                return 1
            first = pins.index(mine[0])
            if pins[first:first + len(mine)] != mine:
                return 1
            sizes.add(len(mine))
    return sizes.pop() if len(sizes) == 1 else 1


def _split_memory(total: int, counts: Sequence[int]) -> list[int]:
    n = sum(counts)
    parts = [total * c // n for c in counts]
    parts[0] += total - sum(parts)
    return parts


def _fit_dedicated(states: list[_CellState], req: Request) -> Plan | NoFit:
    if req.numa_nodes is not None and not 1 <= req.numa_nodes <= len(states):
        return NoFit((f"host has {len(states)} NUMA nodes, the request asks for "
                      f"{req.numa_nodes}",))
    if req.numa_nodes is not None and req.numa_nodes > req.vcpus:
        return NoFit((f"{req.vcpus} vCPUs cannot span {req.numa_nodes} NUMA nodes",))
    reasons: list[str] = []
    if req.numa_nodes in (None, 1):
        best: tuple[tuple[int, int, int], _CellState, _Pick] | None = None
        for st in states:
            if st.free_mib < req.memory_mib:
                reasons.append(f"node {st.cell.id} has {st.free_mib} MiB free, needs "
                               f"{req.memory_mib} MiB")
                continue
            pick = _pick(st, req.vcpus, req)
            if isinstance(pick, str):
                reasons.append(pick)
                continue
            key = (st.free_cpus - len(pick.held), st.free_mib - req.memory_mib, st.cell.id)
            if best is None or key < best[0]:
                best = (key, st, pick)
        if best is not None:
            return _plan([(best[1], best[2], req.memory_mib)], best[1].tpc)
        if req.numa_nodes == 1:
            return NoFit(tuple(reasons))
    found = _split(states, req)
    if found is not None:
        return found
    if req.numa_nodes:
        reasons.append(f"no {req.numa_nodes} NUMA nodes can take "
                       f"{_even(req.vcpus, req.numa_nodes)} vCPUs and their memory each")
    else:
        total = sum(_capacity(st, req) for st in states)
        reasons.append(f"all nodes together can take {total} vCPUs of this kind, "
                       f"needs {req.vcpus}" if total < req.vcpus else
                       "no set of nodes has the vCPUs and the memory together")
    return NoFit(tuple(reasons))


def _even(n: int, k: int) -> list[int]:
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def _part(req: Request, index: int) -> Request:
    """The request as one node of a split sees it: the isolated emulator CPU, if any, is
    taken once, on the first node."""
    return req if index == 0 or req.emulator == "share" else replace(req, emulator="share")


class _Memo:
    """One split search visits each node in many combinations; what a node can take, and
    what it picks for a share, depend only on the node, the share and whether the node is
    first (where an isolated emulator CPU goes), so each is worked out once."""

    def __init__(self, req: Request) -> None:
        self.req = req
        self.caps: dict[tuple[int, bool], int] = {}
        self.picks: dict[tuple[int, int, bool], _Pick | str] = {}

    def cap(self, st: _CellState, first: bool) -> int:
        key = (st.cell.id, first)
        got = self.caps.get(key)
        if got is None:
            req = self.req
            got = self.caps[key] = min(_capacity(st, _part(req, 0 if first else 1)),
                                       st.free_mib * req.vcpus // req.memory_mib)
        return got

    def pick(self, st: _CellState, n: int, first: bool) -> _Pick | str:
        key = (st.cell.id, n, first)
        got = self.picks.get(key)
        if got is None:
            got = self.picks[key] = _pick(st, n, _part(self.req, 0 if first else 1))
        return got


def _distribute(combo: Sequence[_CellState], req: Request, memo: _Memo) -> list[int] | None:
    """vCPUs per node for a split: each node at least one (a whole core under require),
    none beyond what its CPUs and its memory (at this request's MiB per vCPU) allow."""
    step = max(st.tpc for st in combo) if req.threads == "require" else 1
    caps = []
    for i, st in enumerate(combo):
        cap = memo.cap(st, i == 0)
        caps.append(cap - cap % step)
    if min(caps) < step or sum(caps) < req.vcpus:
        return None
    counts = [step] * len(combo)
    left = req.vcpus - step * len(combo)
    if left < 0:
        return None
    for i in sorted(range(len(combo)), key=lambda i: -caps[i]):
        add = min(caps[i] - counts[i], left)
        add -= add % step
        counts[i] += add
        left -= add
    return None if left else counts


def _split(states: list[_CellState], req: Request) -> Plan | None:
    """The best split, over the fewest nodes (or exactly ``numa_nodes``).

    Nodes that cannot take a share in any split are left out, and node counts whose
    largest nodes together lack the vCPUs are skipped: both only drop combinations
    ``_fit_across`` would reject, in the order it visits the rest, so the result is the
    same as trying every combination (tests/numa/test_equivalence.py).
    """
    if req.numa_nodes:
        least_mib = min(_split_memory(req.memory_mib, _even(req.vcpus, req.numa_nodes)))
        able = [st for st in states if st.free_cpus and st.free_mib >= least_mib]
        return _fit_across(able, req, req.numa_nodes)
    # A node's share is at most its capacity as a later node of the split (the first
    # also carries an isolated emulator CPU), and under require at least a whole core.
    caps = {st.cell.id: min(_capacity(st, _part(req, 1)),
                            st.free_mib * req.vcpus // req.memory_mib) for st in states}
    able = [st for st in states
            if caps[st.cell.id] >= (st.tpc if req.threads == "require" else 1)]
    largest = sorted((caps[st.cell.id] for st in able), reverse=True)
    for k in range(2, len(states) + 1):
        if sum(largest[:k]) < req.vcpus or k > len(able):
            continue
        found = _fit_across(able, req, k)
        if found is not None:
            return found
    return None


def _fit_across(states: list[_CellState], req: Request, k: int) -> Plan | None:
    best: tuple[tuple[int, int], list[tuple[_CellState, _Pick, int]]] | None = None
    memo = _Memo(req)
    for combo in combinations(states, k):
        # The operator asked for k nodes: split evenly. Otherwise (fewest nodes) each node
        # gets a share, the roomiest the most.
        counts = _even(req.vcpus, k) if req.numa_nodes else _distribute(combo, req, memo)
        if counts is None:
            continue
        mems = _split_memory(req.memory_mib, counts)
        picks = []
        for i, (st, n, mib) in enumerate(zip(combo, counts, mems, strict=True)):
            pick = memo.pick(st, n, i == 0) if st.free_mib >= mib else None
            if pick is None or isinstance(pick, str):
                break
            picks.append((st, pick, mib))
        else:
            key = (sum(st.free_cpus - len(p.held) for st, p, _ in picks),
                   min(st.cell.id for st, _, _ in picks))
            if best is None or key < best[0]:
                best = (key, sorted(picks, key=lambda x: x[0].cell.id))
    if best is None:
        return None
    return _plan(best[1], max(st.tpc for st, _, _ in best[1]))
