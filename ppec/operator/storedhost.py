"""A host's snapshot as placement reads it from the store: the index's numbers came with
it, and what its VMs hold is decoded only when a decision reads it.

A fleet-wide decision (``vm create`` without ``--host``, ``place``) builds its index from
every host's ``Summary`` and runs the exact NUMA check on the few candidates it ranks
first. Decoding every host's allocations (245,000 at 10,000 hosts of 15-45 VMs) was a
second or more of each such command, spent on hosts the decision never looked at.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from ppec.numa import Allocation
from ppec.numa.serial import allocation_from_dict
from ppec.placement.model import HostSnapshot, Summary

_FIELDS = tuple(f.name for f in fields(HostSnapshot))
_SUMMARY_FIELDS = tuple(f.name for f in fields(Summary))


class StoredHost(HostSnapshot):
    """A ``HostSnapshot`` whose ``allocations`` are JSON text until first read, with its
    ``summary`` given (store/snaprows.py computed it with ``Summary.of`` when storing).

    HostSnapshot's generated ``__init__`` sets each field with ``object.__setattr__``,
    which goes through the property's setter below: it keeps the text (or the tuple that
    ``dataclasses.replace`` passes). It equals a HostSnapshot with the same fields."""

    @property
    def allocations(self) -> tuple[Allocation, ...]:
        got: tuple[Allocation, ...] | None = self.__dict__.get("_allocations")
        if got is None:
            raw = self.__dict__["_raw_allocations"]
            got = raw if isinstance(raw, tuple) else tuple(
                allocation_from_dict(a) for a in json.loads(raw))
            self.__dict__["_allocations"] = got
        return got

    @allocations.setter
    def allocations(self, value: str | tuple[Allocation, ...]) -> None:
        self.__dict__["_raw_allocations"] = value
        self.__dict__.pop("_allocations", None)

    @property
    def decoded(self) -> bool:
        """Whether the allocations have been read (for tests and benchmarks)."""
        return "_allocations" in self.__dict__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HostSnapshot):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in _FIELDS)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, f) for f in _FIELDS))


def summary_json(s: Summary) -> list[Any]:
    """A Summary as the store keeps it (store/snaprows.py): its fields, in their order."""
    return [getattr(s, f) for f in _SUMMARY_FIELDS]


def stored_host(summary: list[Any], allocations_text: str, **values: Any) -> StoredHost:
    """A StoredHost from the store's placement part (``values``: HostSnapshot's other
    fields)."""
    h = StoredHost(allocations=allocations_text, **values)   # type: ignore[arg-type]
    # HostSnapshot.summary is a cached_property: this is where it keeps its value. JSON
    # gave the per-node tuples back as lists.
    numbers: list[Any] = [tuple(v) if isinstance(v, list) else v for v in summary]
    h.__dict__["summary"] = Summary(*numbers)
    return h
