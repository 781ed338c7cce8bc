"""The agent's method table: the one place that says what the agent answers.

Pure data, no libvirt: the CLI imports it for the timeout tiers, the server for dispatch
and parameter checking. Each entry names its handler as ``"object.method"``: the agent
resolves it over its handler objects (``ppec.agent.handlers``); nothing here imports them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from ppec.core.errors import BadInput
from ppec.core.units import check_disk_target, check_vm_name
from ppec.wire import limits

# Seconds a client waits for a reply. ``slow`` covers queueing behind the host lock
# (lock_timeout, 300 s by default) plus the work itself; every locked method gets at least
# that (see client_timeout).
TIMEOUTS = {"fast": 30.0, "normal": 90.0, "slow": 600.0}


def client_timeout(method: str, params: Mapping[str, Any]) -> float:
    """How long a client waits for ``method``'s reply."""
    m = METHODS.get(method)
    if m is None:
        return TIMEOUTS["fast"]
    timeout = TIMEOUTS["slow"] if m.mutating else TIMEOUTS[m.tier]
    wait = params.get(m.wait_param) if m.wait_param else None
    if isinstance(wait, int | float) and not isinstance(wait, bool):
        timeout += float(wait)
    return timeout


# NamedTuples, not dataclasses: every agent call's client loads this table, and a frozen
# dataclass costs ~0.5 ms to define (issue 13: start-up is the product's speed).
class Param(NamedTuple):
    type: type
    required: bool = True
    default: Any = None
    check: Callable[[Any], Any] | None = None
    minimum: int | None = None
    maximum: int | None = None


class Method(NamedTuple):
    name: str
    handler: str                # "object.method" of ppec.agent.handlers.Handlers
    params: Mapping[str, Param] = MappingProxyType({})
    tier: str = "fast"
    mutating: bool = False      # runs under the host lock
    # A parameter giving seconds the handler may wait (for a guest): added to the client's
    # timeout, so a long --timeout is not cut short by the tier's.
    wait_param: str | None = None
    # (resource type, operation) for maker-checker: when the host's approvers file lists
    # it, the request must carry an approval the agent verifies itself.
    approval_for: tuple[str, str] | None = None
    # What the approval names: the resource built from the params, and the params whose
    # values the approved request fixed (an approval to detach and keep a volume must not
    # delete it).
    approval_resource: Callable[[Mapping[str, Any]], str] = lambda p: str(p.get("name"))
    approval_binds: tuple[str, ...] = ()


_NAME = Param(str, check=check_vm_name)
_TARGET = Param(str, check=check_disk_target)


def _one_of(*allowed: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value not in allowed:
            raise BadInput(f"{value!r} is not one of {', '.join(allowed)}", code="BAD_PARAMS")
        return value
    return check


def _page_size(value: Any) -> Any:
    if value and value not in limits.HUGEPAGE_KIB.values():
        raise BadInput(f"hugepages {value} KiB is not one of 2048 (2M) or 1048576 (1G)",
                       code="BAD_PARAMS")
    return value


def _client_label(value: Any) -> Any:
    """Who holds a console, as shown to the next one who asks (informational only)."""
    if len(value) > 100 or not value.isprintable():
        raise BadInput("client: at most 100 printable characters", code="BAD_PARAMS")
    return value


def _guest(check: str) -> Callable[[Any], Any]:
    """A check of ppec.wire.guest, loaded when a create is checked: every agent call's
    client loads this table, and only vm.create reads NICs, keys and user-data."""
    def run(value: Any) -> Any:
        from ppec.wire import guest
        return getattr(guest, check)(value)
    return run


def _digest(value: Any) -> Any:
    if not limits.is_sha256(value):
        raise BadInput(f"digest {value[:80]!r}: an image is named by its SHA-256, 64 "
                       f"lower-case hex digits", code="BAD_PARAMS")
    return value


_DIGEST = Param(str, check=_digest)


def _bounded(limit: int, what: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if len(value) > limit or not value.isprintable():
            raise BadInput(f"{what}: at most {limit} printable characters", code="BAD_PARAMS")
        return value
    return check


_host_name = _bounded(253, "host name")
_uri = _bounded(1000, "URI")
_short = _bounded(100, "timestamp")


def _xml(value: Any) -> Any:
    if len(value) > 512 * 1024 or not value.lstrip().startswith("<domain"):
        raise BadInput("xml: a <domain> document of at most 512 KiB", code="BAD_PARAMS")
    return value


def _uuid(value: Any) -> Any:
    import uuid
    try:
        uuid.UUID(value)
    except ValueError:
        raise BadInput(f"uuid {value[:40]!r} is not a UUID", code="BAD_PARAMS") from None
    return value


def _names(value: Any) -> Any:
    if len(value) > 10_000 or not all(isinstance(n, str) for n in value):
        raise BadInput("names must be a list of at most 10000 VM names", code="BAD_PARAMS")
    for name in value:
        check_vm_name(name)
    return value


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("ping", "host.ping"),
    Method("agent.manifest", "update.manifest"),
    # Replaces the agent's own files and restarts it (VMs untouched); the approval, when
    # policy asks for one, names the exact files by their digest.
    Method("agent.update", "update.apply", {
        "version": Param(str),
        "manifest": Param(dict),    # the whole desired package: relative path -> sha256
        "bundle": Param(str),
        "digest": Param(str),
        "allow_downgrade": Param(bool, required=False, default=False),
    }, tier="slow", mutating=True, approval_for=("agent", "update"),
        approval_resource=lambda p: "agent", approval_binds=("digest",)),
    # Back to the previous release kept on the host; the approval names both digests.
    Method("agent.rollback", "update.rollback", {
        "to": Param(str),          # the previous release's digest (agent.manifest)
        "current": Param(str),     # the running one's: a rollback of what was seen
    }, tier="slow", mutating=True, approval_for=("agent", "rollback"),
        approval_resource=lambda p: "agent", approval_binds=("to", "current")),
    # The operator's audit chain heads that came with approved executions (ledger).
    Method("audit.anchors", "audit.anchors"),
    Method("host.info", "host.info"),
    Method("host.numa", "host.numa"),
    Method("host.snapshot", "host.snapshot"),
    # Writes the open alerts to the ledger: under the lock, so no half-made VM looks drifted.
    Method("drift.check", "drift.check", tier="normal", mutating=True),
    Method("vm.list", "vms.list_all", tier="normal"),
    Method("vm.get", "vms.get", {"name": _NAME}),
    Method("vm.xml", "vms.xml", {"name": _NAME}),
    Method("vm.tuning", "vms.tuning", {"name": _NAME}),
    # libvirt's counters of these VMs (all of the host's when empty), in one call; read-only.
    Method("vm.stats", "stats.vms", {"names": Param(list, required=False, default=None,
                                                    check=_names)}),
    Method("vm.create", "vms.create", {
        "name": _NAME,
        "vcpus": Param(int, minimum=1, maximum=limits.MAX_VCPUS),
        "memory_mib": Param(int, minimum=limits.MIN_MEMORY_MIB, maximum=limits.MAX_MEMORY_MIB),
        "disk_bytes": Param(int, minimum=limits.MIN_DISK_BYTES, maximum=limits.MAX_DISK_BYTES),
        "image": Param(str, required=False, default=""),
        "numa": Param(str, required=False, default="shared", check=_one_of(*limits.POLICIES)),
        "numa_nodes": Param(int, required=False, default=0, minimum=0,
                            maximum=limits.MAX_NUMA_NODES),
        "threads": Param(str, required=False, default="prefer",
                         check=_one_of(*limits.THREADS)),
        "emulator": Param(str, required=False, default="share",
                          check=_one_of(*limits.EMULATORS)),
        # page size (KiB) backing a dedicated VM's memory; 0: ordinary pages
        "hugepages": Param(int, required=False, default=0, check=_page_size),
        # [{vrf, mac, address, gateway, dns}]: one NIC each, the first the primary
        "nics": Param(list, required=False, default=None, check=_guest("nics_from_wire")),
        # public key lines and the operator's user-data, for the cloud-init seed
        "ssh_keys": Param(list, required=False, default=None,
                          check=_guest("check_ssh_keys")),
        "user_data": Param(str, required=False, default="",
                           check=_guest("check_user_data")),
        # {"kernel": path, "initrd": path, "cmdline": text}: direct kernel boot
        "boot": Param(dict, required=False, default=None),
    }, tier="slow", mutating=True),
    # Live migration (docs/migration.md). Source: what the target needs, the migration
    # (the host lock let go while libvirt copies), its progress, an abort, the settle
    # that forgets the VM once it runs on the target. Target: the claim, and the settle
    # that takes the VM (or gives the claim up).
    Method("vm.migrate_info", "migrate.describe", {"name": _NAME}, tier="normal",
           mutating=True),
    Method("vm.migrate", "migrate.migrate", {
        "name": _NAME,
        "target": Param(str, check=_host_name),
        "uri": Param(str, check=_uri),
        "xml": Param(str, check=_xml),
        "address": Param(str, required=False, default="", check=_uri),
        "tls": Param(bool, required=False, default=False),
        "max_downtime": Param(int, required=False, default=0, minimum=0, maximum=600_000),
        "bandwidth": Param(int, required=False, default=0, minimum=0, maximum=1 << 20),
        "timeout": Param(int, required=False, default=600, minimum=1, maximum=86_400),
    }, tier="slow", mutating=True, wait_param="timeout", approval_for=("vm", "migrate"),
        approval_binds=("target",)),
    Method("vm.migrate_job", "migrate.job", {"name": _NAME}),
    Method("vm.migrate_abort", "migrate.abort", {"name": _NAME}),
    Method("vm.migrate_settle", "migrate.settle_out", {"name": _NAME}, tier="normal",
           mutating=True),
    Method("vm.incoming", "migrate.claim", {
        "name": _NAME,
        "document": Param(dict),
        "uuid": Param(str, check=_uuid),
        "created_at": Param(str, check=_short),
        "xml": Param(str, check=_xml),
        "source": Param(str, check=_host_name),
        "disks": Param(list, required=False, default=None),
        "seed": Param(str, required=False, default=""),
        "wait": Param(int, required=False, default=900, minimum=1, maximum=86_400),
    }, tier="slow", mutating=True),
    Method("vm.incoming_settle", "migrate.settle_in", {
        "name": _NAME,
        "abandon": Param(bool, required=False, default=False),
    }, tier="normal", mutating=True),
    # Base images by SHA-256 under image_dir/by-digest (issue 25). Only remove takes the
    # host lock: a push of GiBs must not hold up creates.
    Method("image.status", "images.status", {"digest": _DIGEST}),
    Method("image.list", "images.list_all", tier="normal"),
    # Answers {"have": true, ...} (nothing to send) or {"stream": "image", ...}: then the
    # connection carries size - offset raw bytes from the client and ends with one reply
    # line of the agent's, the image's path or BAD_IMAGE (ppec/agent/images.py).
    Method("image.upload", "images.upload", {
        "digest": _DIGEST,
        "size": Param(int, minimum=1, maximum=limits.MAX_DISK_BYTES),
        "offset": Param(int, required=False, default=0, minimum=0,
                        maximum=limits.MAX_DISK_BYTES),
    }, tier="slow"),
    Method("image.remove", "images.remove", {"digest": _DIGEST}, tier="slow",
           mutating=True),
    # The VM's serial console log: the last ``lines`` lines (0: from the start), or with a
    # cursor (opaque, from the previous answer) what came after it (`vm logs --follow`).
    Method("vm.logs", "console.logs", {
        "name": _NAME,
        "lines": Param(int, required=False, default=50, minimum=0, maximum=100_000),
        "cursor": Param(str, required=False, default=None),
    }),
    # Answers {"stream": "console", ...}, then the connection is a raw byte stream to the
    # VM's serial console (docs/design.md, "Console"); no host lock is held meanwhile.
    Method("vm.console", "console.open", {
        "name": _NAME,
        "force": Param(bool, required=False, default=False),
        "client": Param(str, required=False, default="", check=_client_label),
    }, approval_for=("vm", "console")),
    Method("vm.delete", "vms.delete", {"name": _NAME}, tier="slow", mutating=True,
           approval_for=("vm", "delete")),
    Method("vm.start", "vms.start", {"name": _NAME}, tier="normal", mutating=True),
    Method("vm.stop", "vms.stop", {
        "name": _NAME,
        "force": Param(bool, required=False, default=False),
        "timeout": Param(int, required=False, default=60, minimum=1, maximum=3600),
    }, tier="slow", mutating=True, wait_param="timeout"),
    # Lists resolve pending detaches (deleting volumes), so they take the lock.
    Method("disk.list", "disks.list_all", {"name": _NAME}, tier="normal", mutating=True),
    Method("disk.attach", "disks.attach", {
        "name": _NAME,
        "size_bytes": Param(int, required=False, default=0, minimum=0,
                            maximum=limits.MAX_DISK_BYTES),
        "path": Param(str, required=False, default=""),
        "bus": Param(str, required=False, default="virtio", check=_one_of("virtio", "scsi")),
    }, tier="slow", mutating=True),
    # The wait for the guest happens with the host lock let go (see AgentServer).
    Method("disk.detach", "disks.detach", {
        "name": _NAME,
        "target": _TARGET,
        "timeout": Param(int, required=False, default=20, minimum=1, maximum=300),
        "keep_volume": Param(bool, required=False, default=False),
        "path": Param(str, required=False, default=""),   # must be the disk's volume
    }, tier="slow", mutating=True, wait_param="timeout", approval_for=("disk", "detach"),
        approval_resource=lambda p: f"{p.get('name')}/{p.get('target')}",
        approval_binds=("keep_volume", "path")),
)}


def check_params(method: Method, params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``params`` against the method's schema; unknown fields are refused."""
    unknown = sorted(set(params) - set(method.params))
    if unknown:
        raise BadInput(f"{method.name}: unknown parameter(s) {', '.join(unknown)}",
                       code="BAD_PARAMS", details={"unknown": unknown})
    clean: dict[str, Any] = {}
    for name, spec in method.params.items():
        if name not in params:
            if spec.required:
                raise BadInput(f"{method.name}: missing parameter {name!r}", code="BAD_PARAMS")
            clean[name] = spec.default
            continue
        value: Any = params[name]
        # bool is a subclass of int in Python; a JSON true must not pass as a count.
        if not isinstance(value, spec.type) or (spec.type is int and isinstance(value, bool)):
            raise BadInput(f"{method.name}: parameter {name!r} must be "
                           f"{spec.type.__name__}, not {type(value).__name__}",
                           code="BAD_PARAMS")
        number = value if isinstance(value, int) else 0  # bounds apply to integers only
        if spec.minimum is not None and number < spec.minimum:
            raise BadInput(f"{method.name}: {name} must be at least {spec.minimum}",
                           code="BAD_PARAMS")
        if spec.maximum is not None and number > spec.maximum:
            raise BadInput(f"{method.name}: {name} must be at most {spec.maximum}",
                           code="BAD_PARAMS")
        if spec.check is not None:
            spec.check(value)
        clean[name] = value
    return clean
