"""What a command works with: the store, the config, and one agent client per host."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ppec.core.units import check_vm_name
from ppec.operator import config as ppec_config
from ppec.operator.fleet.reach import Reach
from ppec.operator.store import Host, Store

if TYPE_CHECKING:
    from ppec.operator.fleet.client import AgentClient


def locate(ctx: Context, name: str, host: str | None) -> Host:
    """The host holding VM ``name``: ``host`` when given (the VM need not be in the
    store), else the one the store records."""
    check_vm_name(name)
    if host:
        return ctx.store.host(host)
    return ctx.store.host(ctx.store.vm(name).host)


def agent_client(host: Host, reach: Reach) -> AgentClient:
    """A real client (SSH or the local socket). Imported here, on the first host a
    command reaches: `host list`, `request list` and the like never load it."""
    from ppec.operator.fleet.client import AgentClient
    return AgentClient(host, reach)


class Context:
    """The store, the config, how hosts are reached, and one client per host reached.
    A plain class, not a dataclass: see ppec.operator.config."""

    def __init__(self, store: Store, config: ppec_config.Config, reach: Reach,
                 connect: Callable[[Host, Reach], AgentClient] = agent_client) -> None:
        self.store = store
        self.config = config
        self.reach = reach
        # The seam for in-process tests: how a host's client is made (a real AgentClient
        # over a scripted stream there; SSH or the local socket here).
        self.connect = connect
        self._clients: dict[str, AgentClient] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, db: str | None = None) -> Context:
        cfg = ppec_config.load()
        return cls(store=Store(db or ppec_config.default_db(), cfg.store_connect_timeout),
                   config=cfg,
                   reach=Reach(known_hosts=ppec_config.known_hosts_path(),
                               connect_timeout=cfg.connect_timeout, command=cfg.ssh_command))

    def client(self, host: Host) -> AgentClient:
        with self._lock:
            if host.name not in self._clients:
                self._clients[host.name] = self.connect(host, self.reach)
            return self._clients[host.name]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        self.store.close()
