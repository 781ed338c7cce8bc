"""Operator-side configuration and the XDG paths ppec keeps its files in.

Missing files mean the embedded defaults (``ppec/default-config.toml``), never a crash.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from ppec.core.errors import BadInput
from ppec.core.units import parse_memory_mib, parse_size

if TYPE_CHECKING:
    from ppec.placement import Policy

# ppec.placement's strategies, spelled here: importing it pulls in numpy.
Strategy = Literal["pack", "spread"]
STRATEGIES: dict[str, Strategy] = {"pack": "pack", "spread": "spread"}



# Locally administered, unicast (first octet x2): no vendor's MAC is ever taken.
DEFAULT_MAC_PREFIX = "02:70:70"

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(value: object, what: str) -> float:
    """Seconds from a config value: a number (seconds) or text such as ``"5s"``, ``"500ms"``,
    ``"2m"``; negative, non-finite or unparsable values are a clear BAD_INPUT."""
    text = str(value).strip().lower()
    if isinstance(value, bool):
        text = ""
    number, scale = text, 1.0
    for unit in sorted(_DURATION_UNITS, key=len, reverse=True):
        if text.endswith(unit):
            number, scale = text[:-len(unit)].strip(), _DURATION_UNITS[unit]
            break
    try:
        seconds = float(number) * scale
    except ValueError:
        seconds = -1.0
    if not (0 <= seconds < float("inf")):
        raise BadInput(f"invalid {what} {value!r}: a duration such as 5s, 500ms, 2m or a "
                       f"number of seconds (>= 0)", code="BAD_DURATION")
    return seconds


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def config_dir() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "ppec"


def data_dir() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / "ppec"


def config_path() -> Path:
    return Path(os.environ.get("PPEC_CONFIG") or config_dir() / "config.toml")


def known_hosts_path() -> Path:
    return config_dir() / "known_hosts"


def default_db() -> str:
    return os.environ.get("PPEC_DB") or str(data_dir() / "ppec.db")


# NamedTuples, not dataclasses, here and in the store's records and the Context: loading
# `dataclasses` (it imports `inspect`) is 7-10 ms on this machine, on the path of every
# command that opens the store, and defining each class costs ~0.5 ms more (issue 13).
class Flavor(NamedTuple):
    name: str
    cpus: int
    memory_mib: int
    disk_bytes: int


class Config(NamedTuple):
    flavors: Mapping[str, Flavor] = MappingProxyType({})
    connect_timeout: float = 10.0
    ssh_command: str = "ppec-agent proxy"
    # Stored snapshots younger than this are used as they are by `vm create`; older ones
    # (or a host the service marks failed) are asked for anew.
    fresh_for: float = 5.0
    # [store] connect_timeout: how long a command waits out a full, restarting or
    # locked store before it fails (ppec.operator.store.transient).
    store_connect_timeout: float = 30.0
    source: str = "defaults"
    raw: Mapping[str, Any] = MappingProxyType({})   # the merged TOML, for `config show`

    def stale_after(self) -> float:
        """[placement] stale_after: how old a snapshot may be before it is stale. Its own
        reader: `host list` and `sync` need it without loading the placement library."""
        # A duration as fresh_for is ("10m", "1h" or seconds).
        return duration(self.raw.get("placement", {}).get("stale_after", 600),
                        f"[placement] stale_after in config {self.source}")

    def placement_policy(self) -> Policy:
        """``ppec.placement.Policy`` from [placement] (imported here only when needed)."""
        from ppec.placement import Policy, Weights
        p = self.raw.get("placement", {})
        w = p.get("weights", {})
        try:
            weights = Weights(**{k: float(v) for k, v in w.items()})
            strategy = STRATEGIES.get(str(p.get("strategy", "pack")))
            if strategy is None:
                raise ValueError(f"strategy must be pack or spread, not "
                                 f"{p.get('strategy')!r}")
            return Policy(strategy=strategy, weights=weights,
                          stale_after=self.stale_after(),
                          max_candidates=int(p.get("max_candidates", 3)))
        except (TypeError, ValueError) as e:
            raise BadInput(f"config {self.source}: [placement]: {e}") from None

    def mac_prefix(self) -> str:
        """[network] mac_prefix: the octets every MAC ppec hands out starts with."""
        from ppec.wire.guest import check_mac_prefix
        value = self.raw.get("network", {}).get("mac_prefix", DEFAULT_MAC_PREFIX)
        try:
            return check_mac_prefix(str(value))
        except BadInput as e:
            raise BadInput(f"config {self.source}: [network] {e.message}") from None

    def guest_ssh_keys(self) -> list[str]:
        """[guest] ssh_keys: public key lines every new VM's guest accepts."""
        from ppec.wire.guest import key_blob
        keys = self.raw.get("guest", {}).get("ssh_keys", [])
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise BadInput(f"config {self.source}: [guest] ssh_keys must be a list of "
                           f"public key lines")
        for i, key in enumerate(keys):
            try:
                key_blob(key)
            except BadInput as e:
                raise BadInput(f"config {self.source}: [guest] ssh_keys[{i}]: "
                               f"{e.message}") from None
        return [k.strip() for k in keys]

    def flavor(self, name: str) -> Flavor:
        try:
            return self.flavors[name]
        except KeyError:
            raise BadInput(f"unknown flavor {name!r}; known flavors: "
                           f"{', '.join(sorted(self.flavors))}", code="NOT_FOUND") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


def load(path: Path | None = None) -> Config:
    data = tomllib.loads((Path(__file__).parent / "default-config.toml").read_text())
    path = path or config_path()
    source = "defaults"
    if path.exists():
        try:
            data = _merge(data, tomllib.loads(path.read_text()))
        except tomllib.TOMLDecodeError as e:
            raise BadInput(f"config {path}: {e}") from None
        source = str(path)
    flavors = {}
    for name, f in data.get("flavors", {}).items():
        try:
            flavors[name] = Flavor(name, int(f["cpus"]),
                                   parse_memory_mib(str(f["memory"]), what="memory"),
                                   parse_size(str(f["disk"]), what="disk"))
        except (KeyError, TypeError, ValueError) as e:
            raise BadInput(f"config {source}: flavor {name!r} needs cpus, memory and disk "
                           f"({e})") from None
    ssh = data.get("ssh", {})
    fresh_for = duration(data.get("placement", {}).get("fresh_for", 5),
                         f"[placement] fresh_for in config {source}")
    store_wait = duration(data.get("store", {}).get("connect_timeout", 30),
                          f"[store] connect_timeout in config {source}")
    return Config(flavors=flavors, connect_timeout=float(ssh.get("connect_timeout", 10)),
                  ssh_command=str(ssh.get("command", "ppec-agent proxy")), source=source,
                  raw=data, fresh_for=fresh_for, store_connect_timeout=store_wait)
