"""The store's records: a host of the inventory and a VM row. NamedTuples, not
dataclasses: see ppec.operator.config."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from ppec.core.clock import utc_now
from ppec.core.paths import AGENT_SOCKET


class HostRecord(NamedTuple):
    name: str
    address: str
    port: int = 22
    username: str = "root"
    identity: str = ""
    socket: str = AGENT_SOCKET
    region: str = ""
    rack: str = ""
    power_domain: str = ""
    vrf: str = ""
    cost: float = 0.0
    tags: tuple[str, ...] = ()
    drained: bool = False
    added_at: str = ""         # Host fills in the time it was made
    power_idle_w: float = 0.0
    power_max_w: float = 0.0

    @property
    def is_local(self) -> bool:
        return self.address == "local"

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self._asdict().items()}


if TYPE_CHECKING:
    Host = HostRecord
else:
    class Host(HostRecord):
        """A host of the inventory; one made without ``added_at`` is stamped now (a
        NamedTuple field cannot have a factory, and a type checker sees HostRecord's own
        constructor)."""

        __slots__ = ()

        def __new__(cls, *args, **kwargs):
            host = super().__new__(cls, *args, **kwargs)
            return host if host.added_at else host._replace(added_at=utc_now())


class VmRow(NamedTuple):
    name: str
    host: str
    state: str
    vcpus: int
    memory_mib: int
    disk_bytes: int
    image: str
    created_at: str
    updated_at: str
