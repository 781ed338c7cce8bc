from __future__ import annotations

from pathlib import Path

import pytest

from ppec.numa import Topology, from_capabilities

FIXTURES = Path(__file__).parents[1] / "fixtures" / "numa"
NAMES = ["one-node-nosmt", "two-socket-smt", "four-node", "epyc-8node-smt",
         "asymmetric-memory"]


def load(name: str, reserved: frozenset[int] = frozenset()) -> Topology:
    return from_capabilities((FIXTURES / f"{name}.xml").read_text(), reserved)


@pytest.fixture(params=NAMES)
def topology(request: pytest.FixtureRequest) -> Topology:
    return load(request.param)
