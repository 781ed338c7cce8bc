"""The fit as it was before it was made faster (commit 7343024), kept as the oracle.

Only the private machinery is here: the public dataclasses (Request, Allocation, Plan,
GuestCell, NoFit) are ppec.numa's own, so results compare with ``==``.
tests/numa/test_equivalence.py holds ``ppec.numa.fit`` to giving exactly what this gives.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import combinations

from ppec.numa.fit import Allocation, GuestCell, NoFit, Plan, Request
from ppec.numa.topology import Cell, Topology

# -- free state ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Core:
    threads: tuple[int, ...]     # usable threads of this core in the cell
    free: tuple[int, ...]        # of which free
    # False when a sibling thread is reserved for the host: such a core can never be
    # given whole to a VM (isolate, require), only thread by thread.
    whole_possible: bool = True

    @property
    def whole(self) -> bool:
        return self.whole_possible and self.free == self.threads


@dataclass(frozen=True)
class _CellState:
    cell: Cell
    cores: tuple[_Core, ...]
    free_mib: int

    @property
    def free_cpus(self) -> int:
        return sum(len(c.free) for c in self.cores)

    @property
    def whole_cores(self) -> int:
        return sum(1 for c in self.cores if c.whole)

    @property
    def tpc(self) -> int:
        return max((len(c.threads) for c in self.cores), default=1)


def _states(topo: Topology, allocs: Sequence[Allocation]) -> list[_CellState]:
    held = frozenset().union(*(a.cpus for a in allocs))
    bound: dict[int, int] = {}
    for a in allocs:
        for cell_id, mib in a.memory:
            bound[cell_id] = bound.get(cell_id, 0) + mib
    states = []
    for cell in topo.cells:
        groups: dict[frozenset[int], list[int]] = {}
        for cpu in cell.cpus:
            groups.setdefault(cpu.siblings | {cpu.id}, []).append(cpu.id)
        cores = []
        for siblings, members in sorted(groups.items(), key=lambda kv: min(kv[1])):
            # A core with a reserved thread is never whole: nothing dedicated may share it
            # with the host's own work under isolate/require.
            usable = tuple(sorted(t for t in members if t not in topo.reserved))
            if not usable:
                continue
            free = tuple(t for t in usable if t not in held)
            cores.append(_Core(usable, free, whole_possible=not siblings & topo.reserved))
        states.append(_CellState(cell, tuple(cores), cell.memory_mib - bound.get(cell.id, 0)))
    return states


# -- choosing CPUs inside one cell ---------------------------------------------------------


@dataclass(frozen=True)
class _Pick:
    pins: tuple[int, ...]
    emulator: tuple[int, ...]
    held: frozenset[int]


def _capacity(st: _CellState, req: Request) -> int:
    """The most vCPUs of this request the cell could take (emulator CPU set aside)."""
    extra = 1 if req.emulator == "isolate" else 0
    if req.threads == "prefer":
        return max(st.free_cpus - extra, 0)
    if req.threads == "isolate":
        return max(st.whole_cores - extra, 0)
    if st.tpc < 2:
        return 0
    cores = st.whole_cores
    if extra and st.free_cpus == cores * st.tpc:
        cores -= 1   # no loose thread for the emulator: it costs a whole core
    return max(cores, 0) * st.tpc


def _pick(st: _CellState, n: int, req: Request) -> _Pick | str:
    """n vCPUs (plus an emulator CPU if isolated) from one cell, or why not."""
    name = f"node {st.cell.id}"
    whole = [c for c in st.cores if c.whole]
    split = sorted((c for c in st.cores if c.free and not c.whole),
                   key=lambda c: (len(c.free), c.free))
    held: set[int] = set()
    pins: list[int] = []
    emulator: list[int] = []
    if req.threads == "isolate":
        need = n + (1 if req.emulator == "isolate" else 0)
        if len(whole) < need:
            return f"{name} has {len(whole)} free whole cores, needs {need} (threads isolate)"
        for core in whole[:need]:
            held.update(core.free)
            (pins if len(pins) < n else emulator).append(core.free[0])
        return _Pick(tuple(pins), tuple(emulator), frozenset(held))
    if req.threads == "require":
        if st.tpc < 2:
            return f"{name} has no SMT sibling threads (threads require)"
        if n % st.tpc:
            return f"{name}: threads require needs a multiple of {st.tpc} vCPUs, not {n}"
        cores = n // st.tpc
        if len(whole) < cores:
            return (f"{name} has {len(whole)} free whole cores, needs {cores} "
                    f"(threads require)")
        for core in whole[:cores]:
            pins.extend(core.free)
        held.update(pins)
        if req.emulator == "isolate":
            spare = [t for c in split for t in c.free] or \
                    [t for c in whole[cores:] for t in c.free]
            if not spare:
                return f"{name} has no CPU left for the isolated emulator threads"
            emulator.append(spare[0])
            held.add(spare[0])
        return _Pick(tuple(pins), tuple(emulator), frozenset(held))
    # prefer: whole cores while a whole core's worth remains, then fragments, then the rest.
    need = n + (1 if req.emulator == "isolate" else 0)
    if st.free_cpus < need:
        return f"{name} has {st.free_cpus} free CPUs, needs {need}"
    order: list[int] = []
    remaining = need
    rest: list[_Core] = []
    for core in whole:
        if remaining >= len(core.free):
            order.extend(core.free)
            remaining -= len(core.free)
        else:
            rest.append(core)
    for core in [*split, *rest]:
        order.extend(core.free)
    chosen = order[:need]
    return _Pick(tuple(chosen[:n]), tuple(chosen[n:]), frozenset(chosen))


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
    counts = [req.numa_nodes] if req.numa_nodes else range(2, len(states) + 1)
    for k in counts:
        found = _fit_across(states, req, k)
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


def _distribute(combo: Sequence[_CellState], req: Request) -> list[int] | None:
    """vCPUs per node for a split: each node at least one (a whole core under require),
    none beyond what its CPUs and its memory (at this request's MiB per vCPU) allow."""
    step = max(st.tpc for st in combo) if req.threads == "require" else 1
    caps = []
    for i, st in enumerate(combo):
        cap = min(_capacity(st, _part(req, i)), st.free_mib * req.vcpus // req.memory_mib)
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


def _fit_across(states: list[_CellState], req: Request, k: int) -> Plan | None:
    best: tuple[tuple[int, int], list[tuple[_CellState, _Pick, int]]] | None = None
    for combo in combinations(states, k):
        # The operator asked for k nodes: split evenly. Otherwise (fewest nodes) each node
        # gets a share, the roomiest the most.
        counts = _even(req.vcpus, k) if req.numa_nodes else _distribute(combo, req)
        if counts is None:
            continue
        mems = _split_memory(req.memory_mib, counts)
        picks = []
        for i, (st, n, mib) in enumerate(zip(combo, counts, mems, strict=True)):
            pick = _pick(st, n, _part(req, i)) if st.free_mib >= mib else None
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
