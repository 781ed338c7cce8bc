"""What one `vm create` holds in the store while hosts are tried: the VM's name (a row in
state ``creating``), its host and HA spread key (database constraints make both unique
however many ppec processes race), and its NICs: a MAC each and, where the VRF has a pool,
an address (ipdb.allocate_nics: both unique by constraint, in one transaction).

Only our own claim is ever released: a name another create holds is never ours to drop.
While an agent may still be building (the request left, no answer came), the name and the
address stay: they may be in use, and `ppec vm delete` resolves it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ppec.core.errors import PpecError
from ppec.operator import ipdb
from ppec.operator.config import DEFAULT_MAC_PREFIX
from ppec.operator.store import Store
from ppec.wire.vmspec import Nic, Shape


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
    mac_prefix: str = DEFAULT_MAC_PREFIX
    # NICs besides the primary (which is on the host's VRF): (VRF, wanted address or "")
    extra_nics: tuple[tuple[str, str], ...] = ()
    host: str = ""                  # "" until the name is claimed
    nics: list[dict[str, Any]] = field(default_factory=list)
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

    def allocate_nics(self, host_vrf: str) -> tuple[Nic, ...]:
        """The VM's NICs for a host in ``host_vrf``: the primary on that VRF (a host with
        no VRF gives none), then the extra ones; MACs and addresses in one transaction."""
        wants = ([(host_vrf, "")] if host_vrf else []) + list(self.extra_nics)
        self.nics = ipdb.allocate_nics(self.store, self.name, wants, self.mac_prefix) \
            if wants else []
        return tuple(Nic(n["vrf"], n["mac"], n["address"], n["gateway"], tuple(n["dns"]))
                     for n in self.nics)

    def release_nics(self) -> None:
        if self.nics:
            ipdb.release_owner(self.store, self.name)
            self.nics = []

    @property
    def address(self) -> dict[str, Any] | None:
        """The primary NIC's address as `vm create` reports it (``ip``), or None."""
        if not self.nics or not self.nics[0]["ip"]:
            return None
        n = self.nics[0]
        return {"vrf": n["vrf"], "address": n["ip"], "prefix": n["prefix"], "pool": n["pool"],
                "gateway": n["gateway"], "dns": n["dns"], "owner": self.name}

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

    def built(self, state: str, document: dict[str, Any]) -> None:
        self.store.set_vm(self.name, state=state, spec=json.dumps(document, sort_keys=True))

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
