"""The filters, host by host, each with the reason it rejects: the reference semantics.

``ppec.placement.index`` computes the same filters for a whole fleet at once; tests hold
the two to agreeing. A reason names the numbers that decided it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ppec.numa import NoFit, Plan, counted, fit
from ppec.numa import Request as NumaRequest
from ppec.placement.model import (
    Candidate,
    Decision,
    HostSnapshot,
    Policy,
    Rejection,
    Request,
    free_counts,
)


def fit_host(h: HostSnapshot, req: NumaRequest) -> Plan | NoFit:
    return fit(h.topology, h.allocations, req, overcommit=h.overcommit)


def numa_verdict(h: HostSnapshot, req: NumaRequest) -> NoFit | None:
    """Why ``req`` does not fit ``h`` (None: it fits), as ``fit`` says. From the host's
    counts where they decide alone (ppec.numa.counted: no allocation decoded)."""
    if counted.applies(req):
        got = counted.verdict(free_counts(h), req, h.overcommit)
        return got if isinstance(got, NoFit) else None
    plan = fit_host(h, req)
    return plan if isinstance(plan, NoFit) else None


@dataclass(frozen=True)
class Context:
    request: Request
    policy: Policy
    now: float
    ha_taken: Mapping[str, str]          # spread key -> the group member already there
    free_ips: Mapping[str, int] | None   # VRF -> free addresses; None: no IP database
    # How the numa filter gets ppec.numa.fit's verdict: a FleetIndex passes its own,
    # which remembers each host snapshot's answers.
    numa_fit: Callable[[HostSnapshot, NumaRequest], NoFit | None] = field(
        default=numa_verdict, compare=False)


def _state(h: HostSnapshot, ctx: Context) -> str | None:
    if h.drained:
        return "drained"
    if not h.reachable:
        return f"unreachable: {h.error}" if h.error else "unreachable"
    age = ctx.now - h.taken_at
    if age > ctx.policy.stale_after:
        return f"snapshot {age:.0f} s old (limit {ctx.policy.stale_after:.0f} s)"
    return None


def _region(h: HostSnapshot, ctx: Context) -> str | None:
    want = ctx.request.region
    return f"region {h.region or '(none)'}, needs {want}" if want and h.region != want \
        else None


def _vrf(h: HostSnapshot, ctx: Context) -> str | None:
    want = ctx.request.vrf
    return f"VRF {h.vrf or '(none)'}, needs {want}" if want and h.vrf != want else None


def network_reason(h: HostSnapshot, req: Request) -> str | None:
    """The VM's NICs need a network for the host's own VRF (its primary NIC) and for
    each ``--nic`` VRF; the agent reports the networks its config names."""
    need = ({h.vrf} if h.vrf else set()) | req.nic_vrfs
    missing = sorted(need - h.networks)
    return f"no network for VRF {', '.join(missing)}" if missing else None


def _network(h: HostSnapshot, ctx: Context) -> str | None:
    return network_reason(h, ctx.request)


def image_reason(h: HostSnapshot, req: Request) -> str | None:
    """Without pushes on create, a host must already hold the VM's images."""
    if req.push_images:
        return None
    missing = sorted(req.images - h.images)
    return (f"lacks image {', '.join(d[:12] for d in missing)} ([images] push_on_create "
            f"is off)") if missing else None


def _image(h: HostSnapshot, ctx: Context) -> str | None:
    return image_reason(h, ctx.request)


def _tags(h: HostSnapshot, ctx: Context) -> str | None:
    missing = sorted(ctx.request.tags - h.tags)
    return f"lacks tag(s) {', '.join(missing)}" if missing else None


def _resources(h: HostSnapshot, ctx: Context) -> str | None:
    s, r = h.summary, ctx.request
    if r.memory_mib > s.free_mib:
        return f"{s.free_mib} MiB memory free, needs {r.memory_mib} MiB"
    if r.disk_bytes > h.storage_free_bytes:
        return (f"{h.storage_free_bytes >> 20} MiB storage free, "
                f"needs {r.disk_bytes >> 20} MiB")
    if r.vcpus > s.pool:
        return f"{s.pool} CPUs not dedicated, needs {r.vcpus}"
    shared = r.numa is None or r.numa.policy == "shared"
    if shared and s.shared_vcpus + r.vcpus > h.overcommit * s.pool:
        return (f"shared CPUs full: {s.shared_vcpus} + {r.vcpus} vCPUs on {s.pool} CPUs "
                f"exceeds overcommit {h.overcommit:g}")
    return None


def _numa(h: HostSnapshot, ctx: Context) -> str | None:
    why = ctx.numa_fit(h, ctx.request.numa_request)
    return None if why is None else f"NUMA: {why}"


def _ha(h: HostSnapshot, ctx: Context) -> str | None:
    r = ctx.request
    if not r.ha_group:
        return None
    key = h.spread_key(r.spread)
    other = ctx.ha_taken.get(key)
    if other is None:
        return None
    where = "this host" if r.spread == "host" else f"{r.spread.replace('_', ' ')} {key}"
    return f"HA group {r.ha_group} already has {other} on {where}"


def _ip(h: HostSnapshot, ctx: Context) -> str | None:
    if ctx.free_ips is None:
        return None
    free = ctx.free_ips.get(h.vrf, 0)
    return None if free > 0 else f"no free address in VRF {h.vrf or '(none)'}"


FILTERS: tuple[tuple[str, Callable[[HostSnapshot, Context], str | None]], ...] = (
    ("state", _state), ("region", _region), ("vrf", _vrf), ("network", _network),
    ("image", _image), ("tags", _tags),
    ("resources", _resources), ("ha", _ha), ("ip", _ip), ("numa", _numa),
)


def check(h: HostSnapshot, ctx: Context) -> Rejection | None:
    """The first filter that rejects ``h``, with its reason; None when all pass."""
    for rule, f in FILTERS:
        reason = f(h, ctx)
        if reason is not None:
            return Rejection(h.name, rule, f"{h.name}: {reason}")
    return None


def check_all(h: HostSnapshot, ctx: Context) -> dict[str, str | None]:
    """Every filter's verdict, for --explain."""
    return {rule: f(h, ctx) for rule, f in FILTERS}


def place_one(h: HostSnapshot, req: Request, *, now: float, policy: Policy | None = None,
              ha_taken: Mapping[str, str] | None = None,
              free_ips: Mapping[str, int] | None = None) -> Decision:
    """``decide.place`` over a fleet of one host (`vm create --host`): the same filters,
    applied host by host as here, without the fleet's vectors (and numpy, ~130 ms of a
    create's start-up). Ranking one host needs no weights: its candidate has score 0 and
    no notes. tests/placement/test_properties.py holds it equal to ``place``."""
    why = check(h, Context(req, policy or Policy(), now, ha_taken or {}, free_ips))
    if why is not None:
        return Decision((), (why,), 1)
    return Decision((Candidate(h.name, 0.0, (), ()),), (), 1)
