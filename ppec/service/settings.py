"""The service's settings: the operator config's ``[serve]`` table (and ``[images]``),
checked at start.

A bad value is one clear error (``BadInput``, exit 2) before anything runs, never a
surprise an hour later when a job first reads it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ppec.core.errors import BadInput
from ppec.core.units import check_label
from ppec.operator import config as ppec_config
from ppec.operator.fleet.client import Reach
from ppec.operator.store import Store

_NUMBERS: dict[str, tuple[float, float, float]] = {
    # key: (default, lowest allowed, highest allowed)
    "snapshot_interval": (30.0, 0.05, 86400.0),
    "drift_interval": (60.0, 0.05, 86400.0),
    "agent_check_interval": (300.0, 0.05, 86400.0),
    "images_interval": (300.0, 0.05, 86400.0),
    "jitter": (0.1, 0.0, 0.5),
    "backoff_base": (5.0, 0.0, 86400.0),
    "backoff_cap": (300.0, 0.0, 86400.0),
    "stop_grace": (5.0, 0.0, 600.0),
}
_INTEGERS: dict[str, tuple[int, int, int]] = {
    "workers": (32, 1, 1024),
    "batch": (500, 1, 100000),
    "notify_queue": (10000, 1, 1000000),
    "image_pushes": (4, 1, 1024),
    "store_connections": (4, 1, 64),   # the HTTP requests' pool of store connections
}
_KNOWN = {*_NUMBERS, *_INTEGERS, "notifier", "leader_retry"}


@dataclass(frozen=True)
class NotifierSpec:
    type: str                       # webhook | command
    url: str = ""
    argv: tuple[str, ...] = ()
    timeout: float = 5.0
    retries: int = 3

    @property
    def name(self) -> str:
        return f"webhook {self.url}" if self.type == "webhook" else f"command {self.argv[0]}"


@dataclass(frozen=True)
class Settings:
    db: str
    listen: str = "127.0.0.1:8480"
    token_file: Path | None = None
    once: bool = False
    snapshot_interval: float = 30.0
    drift_interval: float = 60.0
    agent_check_interval: float = 300.0
    images_interval: float = 300.0   # seconds between image rounds ([images] everywhere)
    jitter: float = 0.1
    workers: int = 32
    backoff_base: float = 5.0
    backoff_cap: float = 300.0
    batch: int = 500                 # snapshots per store transaction
    stop_grace: float = 5.0          # seconds a stopping round may take before abandoned
    notify_queue: int = 10000        # pending notifications before new ones are dropped
    image_pushes: int = 4            # pushes at once, each holding one of the workers
    leader_retry: float = 0.0        # 0: the shortest job interval
    notifiers: tuple[NotifierSpec, ...] = field(default_factory=tuple)
    images_everywhere: tuple[str, ...] = ()   # [images] everywhere: catalogue names
    known_hosts: Path = field(default_factory=ppec_config.known_hosts_path)
    connect_timeout: float = 10.0
    ssh_command: str = "ppec-agent proxy"
    store_connections: int = 4
    store_connect_timeout: float = 30.0   # [store] connect_timeout

    def open_store(self) -> Store:
        """The store, waiting out a full or restarting server as the CLI does."""
        return Store(self.db, self.store_connect_timeout)

    def reach(self) -> Reach:
        """Hosts are reached, and their keys checked, exactly as the CLI does."""
        return Reach(known_hosts=self.known_hosts, connect_timeout=self.connect_timeout,
                     command=self.ssh_command)

    @property
    def retry_every(self) -> float:
        """How often a follower tries the leader lock: within one interval of a death."""
        return self.leader_retry or min(self.snapshot_interval, self.drift_interval,
                                        self.agent_check_interval)


def _number(table: dict[str, Any], key: str, lo: float, hi: float, default: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInput(f"[serve] {key} must be a number, not {value!r}")
    if not lo <= float(value) <= hi:
        raise BadInput(f"[serve] {key} = {value} is out of range ({lo:g} to {hi:g})")
    return float(value)


def _notifier(i: int, entry: Any) -> NotifierSpec:
    where = f"[[serve.notifier]] #{i + 1}"
    if not isinstance(entry, dict):
        raise BadInput(f"{where} must be a table")
    kind = entry.get("type")
    allowed = {"webhook": {"type", "url", "timeout", "retries"},
               "command": {"type", "argv", "timeout", "retries"}}
    if kind not in allowed:
        raise BadInput(f"{where}: type must be \"webhook\" or \"command\", not {kind!r}")
    unknown = sorted(set(entry) - allowed[kind])
    if unknown:
        raise BadInput(f"{where}: unknown key(s) {', '.join(unknown)} for type {kind}")
    timeout = _number(entry, "timeout", 0.1, 600.0, 5.0)
    retries = entry.get("retries", 3)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 100:
        raise BadInput(f"{where}: retries must be an integer from 0 to 100, not {retries!r}")
    if kind == "webhook":
        url = entry.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise BadInput(f"{where}: url must be an http:// or https:// URL, not {url!r}")
        return NotifierSpec("webhook", url=url, timeout=timeout, retries=retries)
    argv = entry.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise BadInput(f"{where}: argv must be a non-empty list of strings, not {argv!r}")
    return NotifierSpec("command", argv=tuple(argv), timeout=timeout, retries=retries)


def load(*, db: str | None = None, listen: str = "127.0.0.1:8480",
         token_file: Path | None = None, once: bool = False) -> Settings:
    """Settings from the operator config file and the command line (``--db``/PPEC_DB)."""
    cfg = ppec_config.load()
    settings = from_config(cfg.raw, db=db or ppec_config.default_db(), listen=listen,
                           token_file=token_file, once=once, source=cfg.source)
    return replace(settings, connect_timeout=cfg.connect_timeout,
                   ssh_command=cfg.ssh_command,
                   store_connect_timeout=cfg.store_connect_timeout)


def from_config(raw: Mapping[str, Any], *, db: str, listen: str = "127.0.0.1:8480",
                token_file: Path | None = None, once: bool = False,
                source: str = "config") -> Settings:
    """Settings from the merged operator config (``Config.raw``); raises ``BadInput``."""
    table = raw.get("serve", {})
    try:
        if not isinstance(table, dict):
            raise BadInput("[serve] must be a table")
        unknown = sorted(set(table) - _KNOWN)
        if unknown:
            raise BadInput(f"[serve]: unknown key(s) {', '.join(unknown)}; known: "
                           f"{', '.join(sorted(_KNOWN))}")
        values: dict[str, Any] = {k: _number(table, k, lo, hi, d)
                                  for k, (d, lo, hi) in _NUMBERS.items()}
        for key, (default, lo, hi) in _INTEGERS.items():
            v = table.get(key, default)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise BadInput(f"[serve] {key} must be an integer from {lo} to {hi}, "
                               f"not {v!r}")
            values[key] = v
        values["leader_retry"] = _number(table, "leader_retry", 0.0, 86400.0, 0.0)
        if values["backoff_cap"] < values["backoff_base"]:
            raise BadInput("[serve] backoff_cap must not be below backoff_base")
        entries = table.get("notifier", [])
        if not isinstance(entries, list):
            raise BadInput("[serve] notifier must be an array of tables ([[serve.notifier]])")
        notifiers = tuple(_notifier(i, e) for i, e in enumerate(entries))
        values["images_everywhere"] = _images(raw.get("images", {}))
    except BadInput as e:
        raise BadInput(f"config {source}: {e.message}") from None
    _check_listen(listen)
    return Settings(db=db, listen=listen, token_file=token_file, once=once,
                    notifiers=notifiers, **values)


def _images(table: Any) -> tuple[str, ...]:
    """``[images] everywhere``: catalogue names the images job keeps on every host. Only
    their spelling is checked here; whether the catalogue has them is the job's question
    each round (the catalogue changes while the service runs)."""
    if not isinstance(table, dict):
        raise BadInput("[images] must be a table")
    # The table is shared with the CLI (push_on_create, …): only a near miss of ours is
    # refused, so a typo does not silently mean "nothing wanted".
    for key in sorted(table):
        if key != "everywhere" and difflib.get_close_matches(key, ["everywhere"], 1, 0.75):
            raise BadInput(f"[images]: unknown key {key} (everywhere?)")
    names = table.get("everywhere", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadInput(f"[images] everywhere must be a list of image names, not {names!r}")
    for name in names:
        try:
            check_label(name, "image name")
        except BadInput as e:
            raise BadInput(f"[images] everywhere: {e.message}") from None
    if len(set(names)) != len(names):
        raise BadInput("[images] everywhere names an image twice")
    return tuple(names)


def _check_listen(listen: str) -> None:
    from ppec.service.http.listen import split  # one parser for --listen (stdlib only)
    split(listen)
