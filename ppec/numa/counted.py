"""``ppec.numa.fit`` on counts alone, for the requests whose verdict needs no CPU ids.

A shared VM needs memory on the host and room in the shared pool; a dedicated VM whose
threads are ``prefer`` and whose emulator threads ``share`` its CPUs takes any ``n`` free
CPUs of a node (``cells.pick`` fails only on the count). For those requests every step
of ``fit`` (the memory check, the best single node, the fewest-node split and its ranking,
the shared pool's overcommit) depends only on each node's free CPUs and free MiB, the
pool, the shared vCPUs and the host's memory: the numbers a host's ``Summary`` keeps and
the store holds beside each snapshot. So a fleet-wide verdict (``place --explain``) or a
count (``capacity``) reads those numbers instead of decoding every VM's allocation and
rebuilding every node's free threads (at 10,000 hosts, 245,000 allocations).

The reasons are worded exactly as ``fit`` words them; tests/numa/test_counted.py holds
the two equal (verdict, reasons, the nodes taken) over generated hosts and requests.
``isolate`` and ``require`` threads, and isolated emulator threads, depend on which
threads are free: ``applies`` is False for them and callers use ``fit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

# The same even split of vCPUs and of memory as fit's, not a copy of them.
from ppec.numa.fit import _even, _split_memory
from ppec.numa.model import NoFit, Request

# (node index, vCPUs, MiB) for each node a dedicated VM takes; () for a shared VM.
Parts = tuple[tuple[int, int, int], ...]


def applies(req: Request) -> bool:
    return req.policy == "shared" or (req.threads == "prefer" and req.emulator == "share")


@dataclass
class Free:
    """A host's free state as counts (mutable: ``take`` applies a VM to it)."""

    cell_ids: tuple[int, ...]
    cpus: list[int]            # free CPUs per node (usable, held by no dedicated VM)
    mib: list[int]             # free MiB per node (not bound by a dedicated VM)
    shared_vcpus: int
    total_mib: int
    used_mib: int

    @property
    def pool(self) -> int:
        return sum(self.cpus)

    def take(self, req: Request, parts: Parts) -> None:
        self.used_mib += req.memory_mib
        if req.policy == "shared":
            self.shared_vcpus += req.vcpus
            return
        for i, n, mib in parts:
            self.cpus[i] -= n
            self.mib[i] -= mib


def verdict(free: Free, req: Request, overcommit: float) -> Parts | NoFit:
    """What ``fit`` decides, on counts: the nodes taken, or why not."""
    if req.vcpus < 1 or req.memory_mib < 1:
        return NoFit(("a VM needs at least one vCPU and some memory",))
    if free.used_mib + req.memory_mib > free.total_mib:
        return NoFit((f"host has {free.total_mib - free.used_mib} MiB free, needs "
                      f"{req.memory_mib} MiB",))
    pool = free.pool
    if req.policy == "shared":
        if req.vcpus > pool:
            return NoFit((f"{pool} CPUs are not dedicated, a shared VM of "
                          f"{req.vcpus} vCPUs needs as many",))
        if free.shared_vcpus + req.vcpus > overcommit * pool:
            return NoFit((f"shared CPUs full: {free.shared_vcpus} + {req.vcpus} vCPUs on "
                          f"{pool} CPUs exceeds overcommit {overcommit:g}",))
        return ()
    parts = _dedicated(free, req)
    if isinstance(parts, NoFit):
        return parts
    left = pool - req.vcpus
    if free.shared_vcpus > overcommit * left:
        return NoFit((f"taking {req.vcpus} CPUs would leave {left} for shared VMs that "
                      f"have {free.shared_vcpus} vCPUs (overcommit {overcommit:g})",))
    return parts


def _dedicated(free: Free, req: Request) -> Parts | NoFit:
    nodes = len(free.cell_ids)
    want = req.numa_nodes
    if want is not None and not 1 <= want <= nodes:
        return NoFit((f"host has {nodes} NUMA nodes, the request asks for {want}",))
    if want is not None and want > req.vcpus:
        return NoFit((f"{req.vcpus} vCPUs cannot span {want} NUMA nodes",))
    reasons: list[str] = []
    if want in (None, 1):
        best: tuple[tuple[int, int, int], int] | None = None
        for i, cell in enumerate(free.cell_ids):
            if free.mib[i] < req.memory_mib:
                reasons.append(f"node {cell} has {free.mib[i]} MiB free, needs "
                               f"{req.memory_mib} MiB")
            elif free.cpus[i] < req.vcpus:
                reasons.append(f"node {cell} has {free.cpus[i]} free CPUs, needs {req.vcpus}")
            else:
                key = (free.cpus[i] - req.vcpus, free.mib[i] - req.memory_mib, cell)
                if best is None or key < best[0]:
                    best = (key, i)
        if best is not None:
            return ((best[1], req.vcpus, req.memory_mib),)
        if want == 1:
            return NoFit(tuple(reasons))
    found = _split(free, req)
    if found is not None:
        return found
    if want:
        reasons.append(f"no {want} NUMA nodes can take {_even(req.vcpus, want)} vCPUs "
                       f"and their memory each")
    else:
        total = free.pool
        reasons.append(f"all nodes together can take {total} vCPUs of this kind, "
                       f"needs {req.vcpus}" if total < req.vcpus else
                       "no set of nodes has the vCPUs and the memory together")
    return NoFit(tuple(reasons))


def _split(free: Free, req: Request) -> Parts | None:
    v, mem = req.vcpus, req.memory_mib
    if req.numa_nodes:
        least = min(_split_memory(mem, _even(v, req.numa_nodes)))
        able = [i for i in range(len(free.cell_ids)) if free.cpus[i] and free.mib[i] >= least]
        return _across(free, req, able, req.numa_nodes)
    caps = [min(free.cpus[i], free.mib[i] * v // mem) for i in range(len(free.cell_ids))]
    able = [i for i in range(len(free.cell_ids)) if caps[i] >= 1]
    largest = sorted((caps[i] for i in able), reverse=True)
    for k in range(2, len(free.cell_ids) + 1):
        if sum(largest[:k]) < v or k > len(able):
            continue
        found = _across(free, req, able, k)
        if found is not None:
            return found
    return None


def _across(free: Free, req: Request, able: list[int], k: int) -> Parts | None:
    v, mem = req.vcpus, req.memory_mib
    best: tuple[tuple[int, int], Parts] | None = None
    for combo in combinations(able, k):
        counts = _even(v, k) if req.numa_nodes else _distribute(free, req, combo)
        if counts is None:
            continue
        mems = _split_memory(mem, counts)
        if any(free.mib[i] < mib or free.cpus[i] < n
               for i, n, mib in zip(combo, counts, mems, strict=True)):
            continue
        key = (sum(free.cpus[i] - n for i, n in zip(combo, counts, strict=True)),
               min(free.cell_ids[i] for i in combo))
        if best is None or key < best[0]:
            parts = sorted(zip(combo, counts, mems, strict=True),
                           key=lambda p: free.cell_ids[p[0]])
            best = (key, tuple(parts))
    return None if best is None else best[1]


def _distribute(free: Free, req: Request, combo: tuple[int, ...]) -> list[int] | None:
    v, mem = req.vcpus, req.memory_mib
    caps = [min(free.cpus[i], free.mib[i] * v // mem) for i in combo]
    if min(caps) < 1 or sum(caps) < v:
        return None
    counts = [1] * len(combo)
    left = v - len(combo)
    if left < 0:
        return None
    for j in sorted(range(len(combo)), key=lambda j: -caps[j]):
        add = min(caps[j] - counts[j], left)
        counts[j] += add
        left -= add
    return None if left else counts
