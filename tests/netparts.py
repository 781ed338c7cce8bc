"""Test LANs under the project's network rule (DESIGN.md, "The VM as users meet it").

A test LAN is a Linux bridge that carries no host address (``disable_ipv6`` is set before
it comes up, so not even a link-local one), a network namespace the test made, and a veth
pair: one end a port of the bridge (no address either), the other inside the namespace
holding the gateway address. Guests' NICs join the bridge; every packet to a guest is sent
from inside the namespace (``ip netns exec NS ping ...``), and only to loopback or to an
address of the LAN's own subnet (``Lan.ping`` refuses any other). ``Lan.remove`` removes
exactly what ``make_lan`` made, and ``make_lan`` removes what it made when a step fails.

libvirt's tap for ``<interface type='bridge'>`` (seen here with libvirt 9.0) carries the
guest's MAC with its first octet replaced by ``fe`` (``02:70:70:0a:1b:2c`` in the guest is
``fe:70:70:0a:1b:2c`` on the host), so the bridge never learns the guest's own address as a
local one; ``taps_with_mac`` finds a tap by either form.

Needs root, iproute2 and iputils' ping; ``net_reason()`` says why not when they are missing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SYS_NET = Path("/sys/class/net")


def _run(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(args), check=check, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.CalledProcessError as e:
        raise AssertionError(f"{' '.join(args)}: {e.stderr.strip() or e.stdout.strip()}") from None


def _link_exists(name: str) -> bool:
    return (SYS_NET / name).exists()


def _netns_exists(name: str) -> bool:
    return name in _netns_names()


def _netns_names() -> set[str]:
    done = _run("ip", "netns", "list", check=False)
    return {line.split()[0] for line in done.stdout.splitlines() if line.strip()}


def _disable_ipv6(dev: str, netns: str | None = None) -> None:
    """No IPv6 on ``dev`` (no link-local address, no router solicitations)."""
    if netns is None:
        Path(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6").write_text("1\n")
    else:
        _run("ip", "netns", "exec", netns, "sh", "-c",
             f"echo 1 > /proc/sys/net/ipv6/conf/{dev}/disable_ipv6")


@cache
def net_reason() -> str | None:
    """Why test LANs cannot be made here, or None when they can (root, iproute2, ping,
    and the kernel makes bridges, veth pairs and network namespaces)."""
    if os.geteuid() != 0:
        return "test LANs (bridge, veth, network namespace) need root"
    for tool, package in (("ip", "iproute2"), ("ping", "iputils-ping")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    tag = uuid.uuid4().hex[:8]
    bridge, veth, netns = f"pbq{tag}", f"pvq{tag}", f"ppec-probe-{tag}"
    try:
        for args, what in ((("ip", "link", "add", bridge, "type", "bridge"), "a bridge"),
                           (("ip", "link", "add", veth, "type", "veth", "peer", "name",
                             f"pnq{tag}"), "a veth pair"),
                           (("ip", "netns", "add", netns), "a network namespace")):
            done = _run(*args, check=False)
            if done.returncode != 0:
                return f"cannot make {what} here: {done.stderr.strip()}"
        return None
    finally:
        _run("ip", "link", "del", veth, check=False)
        _run("ip", "link", "del", bridge, check=False)
        _run("ip", "netns", "del", netns, check=False)


@dataclass
class Lan:
    bridge: str        # the bridge guests' NICs join; <= 15 characters
    netns: str         # the namespace every packet to a guest is sent from
    gateway: str       # the namespace's address on the LAN, e.g. "10.93.0.1/24"
    port: str          # the host end of the veth pair (a bridge port, no address)
    inside: str        # its other end, inside the namespace, holding ``gateway``

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_interface(self.gateway).network

    def address(self, host: int) -> str:
        """The ``host``-th address of the LAN's subnet, e.g. 2 -> "10.93.0.2"."""
        return str(self.network.network_address + host)

    def cidr(self, host: int) -> str:
        """The same with the prefix length, as a guest's network-config names it."""
        return f"{self.address(host)}/{self.network.prefixlen}"

    def run(self, *args: str, check: bool = True,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace (only towards this LAN's guests)."""
        return _run("ip", "netns", "exec", self.netns, *args, check=check, timeout=timeout)

    def _target(self, address: str) -> str:
        ip = ipaddress.ip_address(address)
        if ip.is_loopback or (ip in self.network and ip != self.network.network_address
                              and ip != self.network.broadcast_address):
            return str(ip)
        raise ValueError(f"{address} is neither loopback nor on the test LAN {self.network}: "
                         "tests send packets to nothing else")

    def ping(self, address: str, count: int = 1, timeout_s: float = 1) -> bool:
        """One or more echo requests from inside the namespace; True if any was answered."""
        target = self._target(address)
        done = self.run("ping", "-n", "-q", "-c", str(count), "-W", str(timeout_s), target,
                        check=False, timeout=count * (timeout_s + 1) + 10)
        return done.returncode == 0

    def wait_ping(self, address: str, timeout: float = 90) -> None:
        """Ping ``address`` until it answers; AssertionError saying what was seen if it never
        does within ``timeout`` seconds."""
        target = self._target(address)
        deadline = time.monotonic() + timeout
        while True:
            if self.ping(target, count=1, timeout_s=1):
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{target} did not answer a ping from namespace {self.netns} within "
                    f"{timeout:.0f} s; the namespace's neighbours: {self.arp() or 'none'}; "
                    f"ports of {self.bridge}: {bridge_ports(self.bridge) or 'none'}")

    def pinger(self, address: str, interval: float = 0.1) -> Pinger:
        """Echo requests every ``interval`` s from the namespace until stopped."""
        return Pinger(self, self._target(address), interval)

    def arp(self) -> dict[str, str]:
        """The namespace's neighbour table: address -> link-layer address (resolved only)."""
        table: dict[str, str] = {}
        for line in self.run("ip", "neigh", "show").stdout.splitlines():
            words = line.split()
            if "lladdr" in words:
                table[words[0]] = words[words.index("lladdr") + 1].lower()
        return table

    def remove(self) -> None:
        """Remove the veth pair, the namespace and the bridge (whatever of them exists)."""
        if _link_exists(self.port):          # deleting one end deletes the pair
            _run("ip", "link", "del", self.port, check=False)
        if _netns_exists(self.netns):
            _run("ip", "netns", "del", self.netns, check=False)
        if _link_exists(self.bridge):
            _run("ip", "link", "del", self.bridge, check=False)
        left = [n for n in (self.port, self.bridge) if _link_exists(n)]
        if _netns_exists(self.netns):
            left.append(f"netns {self.netns}")
        if left:
            raise AssertionError(f"test LAN not fully removed: {', '.join(left)} remain")


class Pinger:
    """``ping -D`` running in a LAN's namespace: which requests were answered, when."""

    def __init__(self, net: Lan, address: str, interval: float) -> None:
        self.started = time.time()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", net.netns, "ping", "-D", "-n", "-i", str(interval),
             "-W", "1", address], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)

    def stop(self) -> list[float]:
        """Stop; the times (epoch seconds) of the answers."""
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=10)
        return [float(line[1:line.index("]")]) for line in out.splitlines()
                if line.startswith("[") and "bytes from" in line]

    @staticmethod
    def longest_gap(times: list[float], start: float, end: float) -> float:
        """The longest time without an answer between ``start`` and ``end``."""
        points = [start, *sorted(t for t in times if start <= t <= end), end]
        return max(b - a for a, b in itertools.pairwise(points))


def make_lan(gateway_cidr: str = "10.93.0.1/24") -> Lan:
    """A new test LAN whose namespace holds ``gateway_cidr``; the caller removes it (or use
    ``lan()``). Names are unique: LANs of concurrent tests never meet."""
    gateway = ipaddress.ip_interface(gateway_cidr)
    if gateway.ip in (gateway.network.network_address, gateway.network.broadcast_address):
        raise ValueError(f"{gateway_cidr} is not a host address of its network")
    tag = uuid.uuid4().hex[:8]
    made = Lan(bridge=f"pb{tag}", netns=f"ppec-lan-{tag}", gateway=str(gateway),
               port=f"pv{tag}", inside=f"pn{tag}")
    try:
        _run("ip", "link", "add", made.bridge, "type", "bridge")
        _disable_ipv6(made.bridge)
        _run("ip", "netns", "add", made.netns)
        _run("ip", "link", "add", made.port, "type", "veth", "peer", "name", made.inside)
        _disable_ipv6(made.port)
        _run("ip", "link", "set", made.inside, "netns", made.netns)
        _run("ip", "link", "set", made.port, "master", made.bridge)
        _run("ip", "link", "set", made.port, "up")
        _run("ip", "link", "set", made.bridge, "up")
        _disable_ipv6(made.inside, made.netns)
        made.run("ip", "link", "set", "lo", "up")
        made.run("ip", "addr", "add", str(gateway), "dev", made.inside)
        made.run("ip", "link", "set", made.inside, "up")
    except BaseException:
        with contextlib.suppress(AssertionError):
            made.remove()
        raise
    return made


@contextlib.contextmanager
def lan(gateway_cidr: str = "10.93.0.1/24") -> Iterator[Lan]:
    """``with lan() as net: ...``: a test LAN, removed on the way out whatever happened."""
    made = make_lan(gateway_cidr)
    try:
        yield made
    finally:
        made.remove()


def bridge_ports(bridge: str) -> list[str]:
    """The interfaces enslaved to ``bridge`` (none if it does not exist)."""
    brif = SYS_NET / bridge / "brif"
    return sorted(p.name for p in brif.iterdir()) if brif.is_dir() else []


def taps_with_mac(mac: str) -> list[str]:
    """Host interfaces whose MAC is ``mac`` or ``mac`` with the first octet ``fe`` (the form
    libvirt gives the tap of a guest NIC with that MAC)."""
    mac = mac.lower()
    wanted = {mac, "fe" + mac[2:]}
    found = []
    for dev in sorted(SYS_NET.iterdir()):
        try:
            if (dev / "address").read_text().strip().lower() in wanted:
                found.append(dev.name)
        except OSError:   # gone meanwhile
            continue
    return found
