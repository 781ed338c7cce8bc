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

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from ppec.placement.decide import explain, place
    from ppec.placement.filters import FILTERS
    from ppec.placement.index import FleetIndex

__all__ = ["FILTERS", "SPREADS", "Candidate", "Decision", "FleetIndex", "HostSnapshot",
           "Policy", "Rejection", "Request", "Spread", "Summary", "Weights", "explain",
           "place"]

# numpy (and the NUMA fit) are imported only when a decision is computed: ``Policy``,
# ``Request`` and the snapshots are read by commands that never place anything
# (`ppec host list`, `ppec config show`).
_LAZY = {"FleetIndex": "ppec.placement.index", "place": "ppec.placement.decide",
         "explain": "ppec.placement.decide", "FILTERS": "ppec.placement.filters"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ppec.placement' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
