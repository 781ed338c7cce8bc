"""Per-row helpers of the fleet index: string codes, and a filter the index takes from
the host-by-host rule itself.

A rule that reads sets per host (a host's networks, later its images or hugepages) has no
cheap vector form, and a second copy of it in numpy is a twin to keep in step by hand. The
index asks the scalar rule once per host and request key instead, and again only for the
rows a placement changed: one rule, read by both paths.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np
import numpy.typing as npt

from ppec.placement.model import HostSnapshot, Request

Bools = npt.NDArray[np.bool_]


class RowRule:
    def __init__(self, passes: Callable[[HostSnapshot, Request], bool],
                 key: Callable[[Request], Hashable]) -> None:
        self.passes = passes
        self.key = key
        self._masks: dict[Hashable, tuple[Bools, set[int]]] = {}

    def mask(self, hosts: Sequence[HostSnapshot], req: Request) -> Bools:
        key = self.key(req)
        got = self._masks.get(key)
        if got is None:
            mask = np.fromiter((self.passes(h, req) for h in hosts), np.bool_, len(hosts))
            self._masks[key] = got = (mask, set())
        mask, dirty = got
        for i in dirty:
            mask[i] = self.passes(hosts[i], req)
        dirty.clear()
        return mask

    def changed(self, row: int) -> None:
        for _, dirty in self._masks.values():
            dirty.add(row)


class Codes:
    """Strings to small integers, so equality tests run on arrays."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def __call__(self, value: str) -> int:
        return self.ids.setdefault(value, len(self.ids))

    def get(self, value: str) -> int:
        return self.ids.get(value, -1)
