"""What one `vm create` holds in the store while hosts are tried: the VM's name (a row in
state ``creating``), its host and HA spread key (database constraints make both unique
however many ppec processes race), and its address from the IP database.

Only our own claim is ever released: a name another create holds is never ours to drop.
While an agent may still be building (the request left, no answer came), the name and the
address stay: they may be in use, and `ppec vm delete` resolves it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ppec.core.errors import PpecError
from ppec.operator import ipdb
from ppec.operator.store import Store
from ppec.wire.vmspec import Shape


class OutcomeUnknown(PpecError):
    """The request to build left and no answer came: the VM may exist."""

    code = "OUTCOME_UNKNOWN"


@dataclass
class Claim:
    store: Store
    name: str
    shape: Shape
    image: str = ""
    ha_group: str = ""
    use_ipdb: bool = False          # False when no IP pool exists: no address to claim
    host: str = ""                  # "" until the name is claimed
    address: dict[str, Any] | None = None
    in_flight: bool = False         # a vm.create was sent and has not been answered

    def place_on(self, host: str, ha_key: str) -> None:
        """Claim the name on ``host`` (or move the claim there), with its spread key.
        Raises HaConflict when another member of the group holds that key."""
        if self.host:
            self.store.move_vm(self.name, host, ha_key)
        else:
            self.store.reserve_vm(self.name, host, self.shape, self.image, self.ha_group,
                                  ha_key)
        self.host = host

    def allocate_address(self, vrf: str) -> dict[str, Any] | None:
        """With an IP database, the VM's address comes from its host's VRF."""
        if self.use_ipdb:
            self.address = ipdb.allocate(self.store, vrf, owner=self.name)
        return self.address

    def release_address(self) -> None:
        if self.address is not None:
            ipdb.release_owner(self.store, self.name)
            self.address = None

    def network(self) -> dict[str, Any] | None:
        """The address as the agent's seed builder reads it."""
        a = self.address
        if a is None:
            return None
        return {"address": f"{a['address']}/{a['prefix']}", "gateway": a["gateway"],
                "dns": a["dns"]}

    @contextmanager
    def sending(self) -> Iterator[None]:
        """Around one vm.create: an answer (even an error) means the agent is done."""
        self.in_flight = True
        try:
            yield
        except PpecError:
            self.in_flight = False
            raise
        self.in_flight = False

    def built(self, state: str) -> None:
        self.store.set_vm(self.name, state=state)

    @contextmanager
    def guard(self) -> Iterator[Claim]:
        """Release the claim when what runs inside fails, unless the outcome is unknown:
        then keep the name and the address, and mark the VM ``unknown``."""
        try:
            yield self
        except BaseException as e:
            unknown = isinstance(e, OutcomeUnknown) or (
                self.in_flight and not isinstance(e, PpecError))
            self._abandon(unknown)
            raise

    def _abandon(self, unknown: bool) -> None:
        row = self.store.vm_or_none(self.name) if self.host else None
        if row is None or row.state != "creating":
            return
        if unknown:
            self.store.set_vm(self.name, state="unknown")
        else:
            ipdb.release_owner(self.store, self.name)
            self.store.forget_vm(self.name)
