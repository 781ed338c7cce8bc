"""IP pools per VRF: allocate the next free address (or a given one), release, list.

Each allocation runs in one IMMEDIATE transaction, and ``(vrf, address)`` is the primary
key of ``ip_addresses``: two processes can never hold one address, even if this code were
wrong. Network, broadcast, gateway and reserved ranges are never handed out.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ppec.core.clock import utc_now
from ppec.core.errors import AlreadyExists, BadInput, Conflict, NoCapacity, NotFound
from ppec.core.units import check_label
from ppec.operator.store import Store
from ppec.operator.store.backends import Connection

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network



@dataclass(frozen=True)
class Pool:
    name: str
    vrf: str
    cidr: str
    gateway: str
    dns: tuple[str, ...]
    reserved: tuple[tuple[str, str], ...]

    @property
    def network(self) -> Network:
        return ipaddress.ip_network(self.cidr)

    def excluded(self, addr: Address) -> bool:
        if self.gateway and addr == ipaddress.ip_address(self.gateway):
            return True
        n = int(addr)
        return any(int(ipaddress.ip_address(lo)) <= n <= int(ipaddress.ip_address(hi))
                   for lo, hi in self.reserved)

    def usable(self) -> int:
        hosts = self.network.num_addresses - (2 if self.network.prefixlen < 31
                                              and self.network.version == 4 else 0)
        gateway = 1 if self.gateway else 0
        reserved = sum(int(ipaddress.ip_address(hi)) - int(ipaddress.ip_address(lo)) + 1
                       for lo, hi in self.reserved)
        return max(hosts - gateway - reserved, 0)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "vrf": self.vrf, "cidr": self.cidr, "gateway": self.gateway,
                "dns": list(self.dns), "reserved": [f"{a}-{b}" for a, b in self.reserved],
                "usable": self.usable()}


def _pool(row: tuple[Any, ...]) -> Pool:
    name, vrf, cidr, gateway, dns, reserved = row
    return Pool(name, vrf, cidr, gateway, tuple(json.loads(dns)),
                tuple((str(r[0]), str(r[1])) for r in json.loads(reserved)))


_POOL_COLS = "name, vrf, cidr, gateway, dns, reserved"


def _parse_range(text: str, net: Network) -> tuple[str, str]:
    lo, _, hi = text.partition("-")
    try:
        first = ipaddress.ip_address(lo.strip())
        last = ipaddress.ip_address(hi.strip()) if hi else first
    except ValueError:
        raise BadInput(f"invalid reserved range {text!r}: use A or A-B") from None
    if first not in net or last not in net or int(last) < int(first):
        raise BadInput(f"reserved range {text} is not inside {net}")
    return str(first), str(last)


def add_pool(store: Store, name: str, vrf: str, cidr: str, gateway: str = "",
             reserve: list[str] | None = None, dns: list[str] | None = None) -> Pool:
    check_label(name, "pool name")
    if not vrf:
        raise BadInput("--vrf is required")
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError as e:
        raise BadInput(f"invalid CIDR {cidr!r}: {e}") from None
    if gateway:
        try:
            gw = ipaddress.ip_address(gateway)
        except ValueError:
            raise BadInput(f"invalid gateway {gateway!r}") from None
        if gw not in net:
            raise BadInput(f"gateway {gateway} is not inside {cidr}")
    for d in dns or []:
        try:
            ipaddress.ip_address(d)
        except ValueError:
            raise BadInput(f"invalid DNS server {d!r}") from None
    ranges = tuple(_parse_range(r, net) for r in reserve or [])
    pool = Pool(name, vrf, str(net), gateway, tuple(dns or ()), ranges)
    with store.transaction() as db:
        for other in (_pool(r) for r in db.execute(
                f"SELECT {_POOL_COLS} FROM ip_pools WHERE vrf=?", (vrf,))):
            if other.network.overlaps(net):
                raise BadInput(f"{cidr} overlaps pool {other.name} ({other.cidr}) in VRF {vrf}")
        try:
            db.execute("INSERT INTO ip_pools (name, vrf, cidr, gateway, dns, reserved, "
                       "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (name, vrf, str(net), gateway, json.dumps(list(pool.dns)),
                        json.dumps([list(r) for r in ranges]), utc_now()))
        except store.db.IntegrityError:
            raise AlreadyExists(f"IP pool {name} already exists") from None
    return pool


def pools(store: Store, vrf: str | None = None) -> list[Pool]:
    with store.transaction() as db:
        sql, args = f"SELECT {_POOL_COLS} FROM ip_pools", ()  # type: tuple[str, tuple[str, ...]]
        if vrf is not None:
            sql, args = sql + " WHERE vrf=?", (vrf,)
        return [_pool(r) for r in db.execute(sql + " ORDER BY vrf, name", args)]


def allocate(store: Store, vrf: str, owner: str = "", address: str = "") -> dict[str, Any]:
    """The next free address of the VRF's pools (or ``address``), recorded with its owner."""
    with store.transaction() as db:
        return _allocate(db, vrf, owner, address)


def _allocate(db: Connection, vrf: str, owner: str, address: str) -> dict[str, Any]:
    in_vrf = [_pool(r) for r in db.execute(
        f"SELECT {_POOL_COLS} FROM ip_pools WHERE vrf=? ORDER BY name", (vrf,))]
    if not in_vrf:
        raise BadInput(f"VRF {vrf!r} has no IP pool (add one with `ppec ip pool add`)",
                       code="NO_POOL")
    used = {a for (a,) in db.execute("SELECT address FROM ip_addresses WHERE vrf=?",
                                     (vrf,))}
    chosen: tuple[Pool, str] | None = None
    if address:
        pool, want = _check_wanted(in_vrf, vrf, address)
        if want in used:
            owner_of = db.execute("SELECT owner FROM ip_addresses WHERE vrf=? AND "
                                  "address=?", (vrf, want)).fetchone()[0]
            raise AlreadyExists(f"{address} in VRF {vrf} is already allocated"
                                + (f" to {owner_of}" if owner_of else ""))
        chosen = (pool, want)
    else:
        for pool in in_vrf:
            for candidate in pool.network.hosts():
                if str(candidate) not in used and not pool.excluded(candidate):
                    chosen = (pool, str(candidate))
                    break
            if chosen:
                break
    if chosen is None:
        raise NoCapacity(f"pool exhausted: VRF {vrf} has no free address "
                         f"({', '.join(p.cidr for p in in_vrf)})", code="POOL_EXHAUSTED")
    pool, addr = chosen
    db.execute("INSERT INTO ip_addresses (vrf, address, pool, owner, allocated_at) "
               "VALUES (?, ?, ?, ?, ?)", (vrf, addr, pool.name, owner, utc_now()))
    return {"vrf": vrf, "address": addr, "prefix": pool.network.prefixlen, "pool": pool.name,
            "gateway": pool.gateway, "dns": list(pool.dns), "owner": owner}


def _check_wanted(in_vrf: list[Pool], vrf: str, address: str) -> tuple[Pool, str]:
    """The pool an explicitly wanted address belongs to, or BAD_INPUT saying why not."""
    try:
        want = ipaddress.ip_address(address)
    except ValueError:
        raise BadInput(f"invalid address {address!r}") from None
    pool = next((p for p in in_vrf if want in p.network), None)
    if pool is None:
        raise BadInput(f"{address} is in no pool of VRF {vrf} "
                       f"({', '.join(p.cidr for p in in_vrf)})")
    net = pool.network
    edge = {net.network_address} | ({net.broadcast_address}
                                    if net.version == 4 and net.prefixlen < 31 else set())
    if want in edge or pool.excluded(want):
        raise BadInput(f"{address} is the network, broadcast, gateway or a reserved "
                       f"address of pool {pool.name}")
    return pool, str(want)


def check_nic(store: Store, vrf: str, address: str = "") -> None:
    """Refuse a ``--nic VRF[=ADDRESS]`` that cannot be given, before anything is claimed:
    a VRF without a pool, or an address outside its pools (exit 2)."""
    in_vrf = pools(store, vrf)
    if not in_vrf:
        raise BadInput(f"--nic {vrf}: VRF {vrf!r} has no IP pool (add one with "
                       f"`ppec ip pool add`)", code="NO_POOL")
    if address:
        try:
            _check_wanted(in_vrf, vrf, address)
        except BadInput as e:
            raise BadInput(f"--nic {vrf}={address}: {e.message}") from None


def allocate_nics(store: Store, owner: str, wants: Sequence[tuple[str, str]],
                  mac_prefix: str) -> list[dict[str, Any]]:
    """One NIC per (VRF, wanted address or ""), in one transaction: a MAC under
    ``mac_prefix`` (unique by the vm_nics primary key) and, where the VRF has a pool, an
    address (unique by ip_addresses'). All of them, or none."""
    with store.transaction() as db:
        out = []
        for slot, (vrf, address) in enumerate(wants):
            has_pool = db.execute("SELECT 1 FROM ip_pools WHERE vrf=? LIMIT 1",
                                  (vrf,)).fetchone() is not None
            ip = _allocate(db, vrf, owner, address) if has_pool or address else None
            mac = _new_mac(db, mac_prefix)
            cidr = f"{ip['address']}/{ip['prefix']}" if ip else ""
            db.execute("INSERT INTO vm_nics (mac, vm, slot, vrf, address, allocated_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (mac, owner, slot, vrf, cidr, utc_now()))
            out.append({"slot": slot, "vrf": vrf, "mac": mac, "address": cidr,
                        "ip": ip["address"] if ip else "", "prefix": ip["prefix"] if ip else 0,
                        "pool": ip["pool"] if ip else "",
                        "gateway": ip["gateway"] if ip else "",
                        "dns": ip["dns"] if ip else []})
    return out


def _new_mac(db: Connection, prefix: str) -> str:
    """A random MAC under ``prefix`` that the store does not hold. Random, not the next
    one: two stores (or a restored backup) handing out MACs to one L2 rarely collide."""
    free_octets = 6 - len(prefix.split(":"))
    for _ in range(64):
        mac = ":".join([prefix, *(f"{b:02x}" for b in secrets.token_bytes(free_octets))])
        if db.execute("SELECT 1 FROM vm_nics WHERE mac=?", (mac,)).fetchone() is None:
            return mac
    raise NoCapacity(f"no free MAC found under prefix {prefix} after 64 tries "
                     f"(a longer [network] mac_prefix leaves too few)", code="MAC_EXHAUSTED")


def release(store: Store, vrf: str, address: str) -> dict[str, Any]:
    with store.transaction() as db:
        row = db.execute("SELECT owner FROM ip_addresses WHERE vrf=? AND address=?",
                         (vrf, address)).fetchone()
        if row is None:
            raise NotFound(f"{address} is not allocated in VRF {vrf}")
        db.execute("DELETE FROM ip_addresses WHERE vrf=? AND address=?", (vrf, address))
    return {"vrf": vrf, "address": address, "released": True, "owner": row[0]}


def update(store: Store, vrf: str, address: str, owner: str,
           expect_owner: str | None = None) -> dict[str, Any]:
    """Give an allocated address another owner. ``expect_owner``: only if it still has
    this one (an approved request names the owner it saw)."""
    if store.vm_or_none(owner) is not None:
        # A VM's addresses go with the VM (deleting it releases what it owns): naming a
        # VM here would let a VM delete release an address that is someone else's.
        raise BadInput(f"{owner!r} is a VM; a VM's address comes with `ppec vm create`",
                       code="OWNER_IS_VM")
    with store.transaction() as db:
        row = db.execute("SELECT owner FROM ip_addresses WHERE vrf=? AND address=?",
                         (vrf, address)).fetchone()
        if row is None:
            raise NotFound(f"{address} is not allocated in VRF {vrf}")
        if expect_owner is not None and row[0] != expect_owner:
            raise Conflict(f"{address} in VRF {vrf} is now owned by {row[0] or 'nobody'!r}, "
                           f"not {expect_owner!r} as the request said", code="OWNER_CHANGED")
        db.execute("UPDATE ip_addresses SET owner=? WHERE vrf=? AND address=?",
                   (owner, vrf, address))
    return {"vrf": vrf, "address": address, "owner": owner, "previous_owner": row[0]}


def release_owner(store: Store, owner: str) -> list[str]:
    """Every address and MAC ``owner`` holds, in one transaction."""
    with store.transaction() as db:
        rows = db.execute("SELECT vrf, address FROM ip_addresses WHERE owner=?",
                          (owner,)).fetchall()
        db.execute("DELETE FROM ip_addresses WHERE owner=?", (owner,))
        db.execute("DELETE FROM vm_nics WHERE vm=?", (owner,))
    return [f"{v}/{a}" for v, a in rows]


def addresses(store: Store, vrf: str | None = None) -> list[dict[str, Any]]:
    with store.transaction() as db:
        sql = "SELECT vrf, address, pool, owner, allocated_at FROM ip_addresses"
        args: tuple[str, ...] = ()
        if vrf is not None:
            sql, args = sql + " WHERE vrf=?", (vrf,)
        rows = db.execute(sql, args).fetchall()
    rows.sort(key=lambda r: (r[0], ipaddress.ip_address(r[1])))
    return [{"vrf": v, "address": a, "pool": p, "owner": o, "allocated_at": t}
            for v, a, p, o, t in rows]


def free_by_vrf(store: Store) -> dict[str, int] | None:
    """Free addresses per VRF, or None when no pool exists (the IP database is unused)."""
    all_pools = pools(store)
    if not all_pools:
        return None
    # Counted by the database: every create asks, and a VRF may hold many addresses.
    used = {str(v): int(n) for v, n in store.db.execute(
        "SELECT vrf, count(*) FROM ip_addresses GROUP BY vrf").fetchall()}
    free: dict[str, int] = {}
    for p in all_pools:
        free[p.vrf] = free.get(p.vrf, 0) + p.usable()
    return {v: n - used.get(v, 0) for v, n in free.items()}
