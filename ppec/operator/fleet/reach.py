"""How the operator reaches hosts (its own module: the store-only commands build one
without loading the client, its transport or the method table)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Reach:
    """How to reach hosts: where the known_hosts file is, SSH timeouts and command."""

    known_hosts: Path
    connect_timeout: float = 10.0
    command: str = "ppec-agent proxy"
