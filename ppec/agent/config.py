"""Agent configuration: TOML, with every key optional and unknown keys refused."""

from __future__ import annotations

import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ppec.core.errors import BadInput
from ppec.core.paths import AGENT_SOCKET
from ppec.core.units import parse_memory_mib, parse_size
from ppec.numa.topology import parse_cpulist

DEFAULT_PATH = Path("/etc/ppec/agent.toml")
# The steps of an update, in order (see ppec.agent.handlers.update and daemon.restart).
UPDATE_STEPS = ("checked", "stored", "staged", "exchanged", "recorded", "restart")
# A migration's steps, in order (docs/migration.md): target, target, source, source,
# target, source.
MIGRATION_STEPS = ("incoming-claimed", "incoming-prepared", "migrate-marked",
                   "migrate-copied", "incoming-settle", "migrate-settle")
FAULT_STEPS = UPDATE_STEPS + MIGRATION_STEPS


NETWORK_KINDS = ("bridge", "macvtap")
CPU_MODES = ("host-model", "host-passthrough")   # or a CPU model name libvirt knows


@dataclass(frozen=True)
class Network:
    """How a VRF's NICs attach on this host: ``[networks.VRF]`` in the config."""

    name: str                  # the VRF
    kind: str                  # bridge (an existing Linux bridge) | macvtap (type='direct')
    source: str                # the bridge, or the device macvtap sits on
    mtu: int = 0               # 0: the device's own

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "source": self.source, "mtu": self.mtu}


@dataclass(frozen=True)
class AgentConfig:
    host: str = field(default_factory=socket.gethostname)
    socket: str = AGENT_SOCKET
    socket_group: str = ""
    state_dir: str = "/var/lib/ppec"
    storage_dir: str = "/var/lib/ppec/disks"
    image_dir: str = "/var/lib/ppec/images"
    libvirt_uri: str = "qemu:///system"
    domain_type: str = "auto"
    reserved_cpus: str = ""
    reserved_memory: str = "1G"
    emulator: str = ""
    lock_timeout: float = 300.0
    cpu_overcommit: float = 4.0
    drift_interval: float = 300.0
    # The installed package against the release last accepted (0: only at start).
    verify_interval: float = 300.0
    # After an update the new code must answer with its digest within this, or the old
    # code (a watchdog child) puts the previous release back.
    health_timeout: float = 20.0
    # A service manager restarts the agent when it exits (systemd Restart=always): then
    # the watchdog only puts the previous release back; else it starts the agent itself.
    supervised: bool = False
    # Tests only: stop (SIGSTOP) this process at the named update step, so a test can
    # kill -9 it there. Read from this file at start; never from the environment.
    fault_stop_at: str = ""
    approvers_file: str = "/etc/ppec/approvers.toml"
    allowed_uids: tuple[int, ...] = ()
    volume_quota: str = "0"        # total virtual size of all volumes on the host; 0: none
    max_volumes: int = 1024        # VM root disks plus data disks on the host
    # The guest CPU on KVM: host-model, host-passthrough or a model name (TCG: maximum).
    cpu_mode: str = "host-model"
    disk_cache: str = "auto"      # auto (none where O_DIRECT works) | none | writeback
    hugepages_sysfs: str = "/sys/devices/system/node"   # per-node huge page counts
    networks: tuple[Network, ...] = ()
    # Live migration (docs/migration.md): how the other hosts' libvirtd reach this host's
    # (qemu+tls://HOST/system; "" refuses incoming migrations), the address QEMU's data
    # stream comes to (tcp://ADDRESS; "": libvirt's choice, the host's name), and whether
    # libvirt wraps that stream in TLS (its certificates must be set up).
    migration_uri: str = ""
    migration_address: str = ""
    migration_tls: bool = False

    def network(self, vrf: str) -> Network | None:
        return next((n for n in self.networks if n.name == vrf), None)

    @property
    def volume_quota_bytes(self) -> int:
        return parse_size(self.volume_quota, what="volume_quota") \
            if self.volume_quota not in ("", "0") else 0

    @property
    def reserved_memory_mib(self) -> int:
        return parse_memory_mib(self.reserved_memory, what="reserved_memory") \
            if self.reserved_memory not in ("", "0") else 0

    @property
    def ledger_path(self) -> Path:
        return Path(self.state_dir) / "ledger.db"

    @property
    def lock_path(self) -> Path:
        return Path(self.state_dir) / "host.lock"


def parse_cpu_list(text: str) -> frozenset[int]:
    """``"0-1,4"`` -> {0, 1, 4}; a config error is bad input, not a crash."""
    try:
        return parse_cpulist(text)
    except ValueError as e:
        raise BadInput(f"invalid CPU list {text!r}: {e}") from None


def load(path: Path | None) -> AgentConfig:
    """Read ``path`` (or the default path if it exists); missing default means defaults."""
    if path is None:
        if not DEFAULT_PATH.exists():
            return AgentConfig()
        path = DEFAULT_PATH
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"agent config {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"agent config {path}: {e}") from None
    return from_mapping(data, source=str(path))


def _networks(value: Any, source: str) -> tuple[Network, ...]:
    """``[networks.VRF]`` tables: exactly one of ``bridge``/``macvtap``, optional ``mtu``."""
    if not isinstance(value, dict):
        raise BadInput(f"{source}: networks must be tables, e.g. [networks.blue]")
    out = []
    for name, table in sorted(value.items()):
        where = f"{source}: [networks.{name}]"
        if not isinstance(table, dict):
            raise BadInput(f"{where} must be a table")
        unknown = sorted(set(table) - {*NETWORK_KINDS, "mtu"})
        if unknown:
            raise BadInput(f"{where}: unknown key(s) {', '.join(unknown)}; known keys are "
                           f"bridge, macvtap, mtu")
        kinds = [k for k in NETWORK_KINDS if k in table]
        if len(kinds) != 1:
            raise BadInput(f"{where}: give exactly one of bridge = \"DEV\" or "
                           f"macvtap = \"DEV\"")
        device, mtu = table[kinds[0]], table.get("mtu", 0)
        # Linux interface names: at most 15 bytes, no '/' or whitespace.
        if not isinstance(device, str) or not 0 < len(device) <= 15 \
                or any(c in device for c in "/ \t\n:") :
            raise BadInput(f"{where}: {kinds[0]} must be an interface name (1-15 characters)")
        if not isinstance(mtu, int) or isinstance(mtu, bool) or \
                (mtu and not 68 <= mtu <= 65535):
            raise BadInput(f"{where}: mtu must be a whole number from 68 to 65535")
        out.append(Network(str(name), kinds[0], device, mtu))
    return tuple(out)


def from_mapping(data: dict[str, Any], source: str = "config") -> AgentConfig:
    known = {f.name: f for f in fields(AgentConfig)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise BadInput(f"{source}: unknown key(s) {', '.join(unknown)}; "
                       f"known keys are {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key == "networks":
            values[key] = _networks(value, source)
        elif key == "allowed_uids":
            if not isinstance(value, list) or not all(isinstance(u, int) for u in value):
                raise BadInput(f"{source}: allowed_uids must be a list of integers")
            values[key] = tuple(value)
        elif key in ("drift_interval", "verify_interval"):
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise BadInput(f"{source}: {key} must be seconds (0: off)")
            values[key] = float(value)
        elif key == "max_volumes":
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BadInput(f"{source}: max_volumes must be a whole number of at least 1")
            values[key] = value
        elif key in ("lock_timeout", "cpu_overcommit", "health_timeout"):
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise BadInput(f"{source}: {key} must be a positive number")
            values[key] = float(value)
        elif key in ("supervised", "migration_tls"):
            if not isinstance(value, bool):
                raise BadInput(f"{source}: {key} must be true or false")
            values[key] = value
        elif not isinstance(value, str):
            raise BadInput(f"{source}: {key} must be a string")
        else:
            values[key] = value
    config = AgentConfig(**values)
    if config.domain_type not in ("auto", "kvm", "qemu", "test"):
        raise BadInput(f"{source}: domain_type must be auto, kvm or qemu, "
                       f"not {config.domain_type!r}")
    if config.fault_stop_at and config.fault_stop_at not in FAULT_STEPS:
        raise BadInput(f"{source}: fault_stop_at must be one of {', '.join(FAULT_STEPS)}")
    if not config.cpu_mode or not config.cpu_mode.replace("-", "").replace("_", "") \
            .replace(".", "").isalnum():
        raise BadInput(f"{source}: cpu_mode must be host-model, host-passthrough or a CPU "
                       f"model name, not {config.cpu_mode!r}")
    if config.disk_cache not in ("auto", "none", "writeback"):
        raise BadInput(f"{source}: disk_cache must be auto, none or writeback, "
                       f"not {config.disk_cache!r}")
    parse_cpu_list(config.reserved_cpus)
    config.reserved_memory_mib  # noqa: B018 -- validates the size early
    config.volume_quota_bytes  # noqa: B018
    return config
