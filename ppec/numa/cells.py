"""A host's NUMA cells as free state, and choosing CPUs inside one cell: the building
blocks of ``ppec.numa.fit`` (the thread rules are in its docstring)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ppec.numa.model import Allocation, Request
from ppec.numa.topology import Cell, Topology

# -- free state ----------------------------------------------------------------------------


class Core(NamedTuple):
    threads: tuple[int, ...]     # usable threads of this core in the cell
    free: tuple[int, ...]        # of which free
    # Every usable thread free, and no sibling reserved for the host: a core with a
    # reserved thread can never be given whole to a VM (isolate, require), only thread
    # by thread.
    whole: bool


class CellState(NamedTuple):
    cell: Cell
    cores: tuple[Core, ...]
    free_mib: int
    free_cpus: int
    whole_cores: int
    tpc: int


# A cell's cores as (usable threads, whole possible), which depends on the topology only:
# computed once per Topology object (held here, so its id cannot be reused meanwhile).
Layout = tuple[tuple[tuple[tuple[int, ...], bool], ...], ...]
_LAYOUTS: dict[int, tuple[Topology, Layout]] = {}


def layout(topo: Topology) -> Layout:
    hit = _LAYOUTS.get(id(topo))
    if hit is not None and hit[0] is topo:
        return hit[1]
    cells = []
    for cell in topo.cells:
        groups: dict[frozenset[int], list[int]] = {}
        for cpu in cell.cpus:
            groups.setdefault(cpu.siblings | {cpu.id}, []).append(cpu.id)
        cores = []
        for siblings, members in sorted(groups.items(), key=lambda kv: min(kv[1])):
            usable = tuple(sorted(t for t in members if t not in topo.reserved))
            if usable:
                cores.append((usable, not siblings & topo.reserved))
        cells.append(tuple(cores))
    layout = tuple(cells)
    if len(_LAYOUTS) >= 256:
        _LAYOUTS.clear()
    _LAYOUTS[id(topo)] = (topo, layout)
    return layout


def states(topo: Topology, allocs: Sequence[Allocation]) -> list[CellState]:
    held: set[int] = set()
    bound: dict[int, int] = {}
    for a in allocs:
        held.update(a.cpus)
        for cell_id, mib in a.memory:
            bound[cell_id] = bound.get(cell_id, 0) + mib
    states = []
    for cell, shapes in zip(topo.cells, layout(topo), strict=True):
        cores = []
        free_cpus = whole_cores = 0
        tpc = 1
        for usable, whole_possible in shapes:
            free = tuple(t for t in usable if t not in held) if held else usable
            whole = whole_possible and len(free) == len(usable)
            cores.append(Core(usable, free, whole))
            free_cpus += len(free)
            whole_cores += whole
            tpc = max(tpc, len(usable))
        states.append(CellState(cell, tuple(cores), cell.memory_mib - bound.get(cell.id, 0),
                                 free_cpus, whole_cores, tpc))
    return states


# -- choosing CPUs inside one cell ---------------------------------------------------------


@dataclass(frozen=True)
class Pick:
    pins: tuple[int, ...]
    emulator: tuple[int, ...]
    held: frozenset[int]


def capacity(st: CellState, req: Request) -> int:
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


def pick(st: CellState, n: int, req: Request) -> Pick | str:
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
        return Pick(tuple(pins), tuple(emulator), frozenset(held))
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
        return Pick(tuple(pins), tuple(emulator), frozenset(held))
    # prefer: whole cores while a whole core's worth remains, then fragments, then the rest.
    need = n + (1 if req.emulator == "isolate" else 0)
    if st.free_cpus < need:
        return f"{name} has {st.free_cpus} free CPUs, needs {need}"
    order: list[int] = []
    remaining = need
    rest: list[Core] = []
    for core in whole:
        if remaining >= len(core.free):
            order.extend(core.free)
            remaining -= len(core.free)
        else:
            rest.append(core)
    for core in [*split, *rest]:
        order.extend(core.free)
    chosen = order[:need]
    return Pick(tuple(chosen[:n]), tuple(chosen[n:]), frozenset(chosen))
