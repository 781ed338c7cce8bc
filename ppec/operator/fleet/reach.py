"""How the operator reaches hosts (its own module: the store-only commands build one
without loading the client, its transport or the method table)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class Reach(NamedTuple):
    """How to reach hosts: where the known_hosts file is, SSH timeouts and command. (A
    NamedTuple: cheaper to define than a dataclass, on the path of every command.)"""

    known_hosts: Path
    connect_timeout: float = 10.0
    command: str = "ppec-agent proxy"
