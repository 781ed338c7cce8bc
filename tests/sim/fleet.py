"""A simulated fleet: many fake agents in a few processes, for scale tests and benchmarks.

Each fake agent listens on its own Unix socket (an inventory host with address ``local``
and that socket), so ppec reaches it through the very client and transport it uses for a
real agent on this machine; only SSH is left out (``bench/serve.py`` measures SSH rounds
on real sshd hosts). Requests and replies go through ``ppec.wire.protocol``, the same
framing and limits as the real agent. Answers come from a generated fleet: mixed NUMA
shapes, tens of VMs per host, a little drift; latency and a failure rate are settings.

Failing hosts do not listen at all (their socket is never bound): to the client that is
an agent that is down, ``AGENT_UNREACHABLE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppec.core.errors import PpecError
from ppec.wire import protocol

VERSION = "0.1.0"
# (sockets, cores per socket, threads per core, memory MiB per node): shapes seen in fleets.
SHAPES = [(2, 8, 2, 65536), (2, 16, 2, 131072), (1, 32, 2, 262144), (4, 12, 2, 98304),
          (2, 24, 1, 196608)]


@dataclass(frozen=True)
class SimSettings:
    count: int
    root: Path                    # sockets live here: <root>/<name>.sock
    seed: int = 7
    vms_per_host: int = 30
    fail_rate: float = 0.0        # share of hosts whose agent is down
    drift_rate: float = 0.02      # share of hosts with an open drift alert
    latency_ms: float = 0.0       # added before every answer

    def name(self, i: int) -> str:
        return f"sim{i:05d}"

    def socket(self, i: int) -> Path:
        return self.root / f"{self.name(i)}.sock"

    def failing(self, i: int) -> bool:
        return random.Random(self.seed * 1_000_003 + i).random() < self.fail_rate


def _topology(rng: random.Random) -> dict[str, Any]:
    sockets, cores, threads, mem = rng.choice(SHAPES)
    cells, cpu = [], 0
    per_cell = cores * threads
    for s in range(sockets):
        ids = list(range(cpu, cpu + per_cell))
        cpu += per_cell
        rows = []
        for k in range(cores):
            sib = ids[k * threads:(k + 1) * threads]
            rows += [[c, s, k, sib] for c in sib]
        cells.append({"id": s, "memory_mib": mem, "cpus": rows, "hugepages": []})
    return {"cells": cells, "reserved": [0, 1]}


def host_answers(settings: SimSettings, i: int) -> dict[str, Any]:
    """Every read method's answer for host ``i``, generated from the seed alone."""
    rng = random.Random(settings.seed * 7919 + i)
    name = settings.name(i)
    topo = _topology(rng)
    cpus = [row[0] for cell in topo["cells"] for row in cell["cpus"]]
    free = [c for c in cpus if c not in topo["reserved"]]
    memory = sum(c["memory_mib"] for c in topo["cells"])
    vms, allocations, used_mem = [], [], 0
    for n in range(rng.randint(settings.vms_per_host // 2, settings.vms_per_host * 3 // 2)):
        vcpus, mib = rng.choice([(1, 1024), (2, 4096), (4, 8192), (8, 16384)])
        if used_mem + mib > memory * 0.8:
            break
        used_mem += mib
        vm = f"{name}-vm{n:03d}"
        dedicated = rng.random() < 0.3 and len(free) >= vcpus
        held = [free.pop() for _ in range(vcpus)] if dedicated else []
        cell = next((c["id"] for c in topo["cells"] for r in c["cpus"] if held and
                     r[0] == held[0]), 0)
        allocations.append({"vm": vm, "policy": "dedicated" if dedicated else "shared",
                            "vcpus": vcpus, "cpus": sorted(held),
                            "memory": [[cell, mib]] if dedicated else []})
        vms.append({"name": vm, "host": name, "uuid": f"{i:08x}-0000-4000-8000-{n:012x}",
                    "state": "running" if rng.random() < 0.95 else "shut off",
                    "vcpus": vcpus, "memory_mib": mib, "disk_path":
                        f"/var/lib/ppec/disks/{vm}.qcow2", "disk_bytes": 10 << 30,
                    "image": "", "created_at": "2026-11-01T00:00:00Z", "ledger": "present",
                    "address": "", "nics": []})
    files = {"__init__.py": hashlib.sha256(VERSION.encode()).hexdigest()}
    digest = hashlib.sha256(f"{VERSION}:{sorted(files.items())}".encode()).hexdigest()
    info = {"host": name, "agent_version": VERSION, "uptime_s": 86400.0, "kernel": "6.1.0",
            "libvirt_uri": "qemu:///system", "libvirt_version": "9.0.0", "hypervisor": "QEMU",
            "domain_type": "kvm", "cpus": len(cpus), "reserved_cpus": topo["reserved"],
            "memory_mib": memory, "reserved_memory_mib": 0,
            "committed_memory_mib": used_mem,
            "committed_vcpus": sum(v["vcpus"] for v in vms),
            "dedicated_cpus": sum(len(a["cpus"]) for a in allocations),
            "numa_nodes": len(topo["cells"]), "os_memory_available_mib": memory - used_mem,
            "cpu_percent": round(rng.uniform(5, 80), 1), "storage_dir": "/var/lib/ppec/disks",
            "storage_free_bytes": rng.randint(1, 8) << 40, "storage_total_bytes": 10 << 40,
            "vm_count": len(vms), "kvm_unusable": "", "cpu_mode": "host-model",
            "cpu_model": "", "vhost_net": False, "networks": [], "images": [],
            "disk_tuning": {"cache": "none", "io": "native", "discard": "unmap",
                            "why": "O_DIRECT works on /var/lib/ppec/disks"}}
    drifted = rng.random() < settings.drift_rate and vms
    alerts = [{"code": "VCPUS", "object": vms[0]["name"], "detail": "libvirt has 3, ppec set 2",
               "first_seen": "2026-11-01T00:00:00Z", "last_seen": "2026-11-01T00:00:00Z"}] \
        if drifted else []
    held_by = {c: a["vm"] for a in allocations for c in a["cpus"]}
    nodes = []
    for cell in topo["cells"]:
        ids = [r[0] for r in cell["cpus"]]
        dedicated = [c for c in ids if c in held_by]
        reserved = [c for c in ids if c in topo["reserved"]]
        free_ids = [c for c in ids if c not in held_by and c not in reserved]
        bound = sum(m for a in allocations for n, m in a["memory"] if n == cell["id"])
        nodes.append({"node": cell["id"], "cpus": len(ids), "reserved": len(reserved),
                      "dedicated": len(dedicated), "free": len(free_ids),
                      "free_cpus": ",".join(map(str, free_ids)),
                      "memory_mib": cell["memory_mib"], "bound_mib": bound,
                      "free_mib": cell["memory_mib"] - bound,
                      "vms": sorted({held_by[c] for c in dedicated}),
                      "hugepages": [{"size_kib": 2048, "total": 0, "free": 0},
                                    {"size_kib": 1048576, "total": 0, "free": 0}]})
    shared = [a for a in allocations if a["policy"] == "shared"]
    # Measured use as an agent on a host whose hypervisor counts nothing reports it (the
    # conformance test's real agent runs on libvirt's test driver): null, never idle.
    use = {"cpu_used": None, "rss_mib": None,
           "vms": {v["name"]: {"cpu_percent": None, "interval_s": 0.0, "memory_mib": None,
                               "rss_mib": None, "state": v["state"], "vcpus": v["vcpus"]}
                   for v in vms}}
    counters = dict.fromkeys(("available_kib", "cpu_ns", "max_memory_kib", "memory_kib",
                              "rss_kib", "steal_ns", "unused_kib", "usable_kib", "vcpu_ns",
                              "wait_ns"))
    return {
        "ping": {"host": name, "version": VERSION, "time": 0.0, "digest": digest,
                 "failed_releases": []},
        "host.info": info,
        "host.numa": {"host": name, "nodes": nodes,
                      "shared": {"vms": sorted(a["vm"] for a in shared),
                                 "vcpus": sum(a["vcpus"] for a in shared),
                                 "cpus": len(free), "overcommit": 4.0}},
        "host.snapshot": {**info, "taken_at": 0.0, "vms": vms, "topology": topo,
                          "allocations": allocations, "cpu_overcommit": 4.0, "vm_use": use},
        "vm.stats": {"host": name, "taken_at": 0.0, "clock_s": 0.0,
                     "vms": [{"name": v["name"], "state": v["state"], "vcpus": v["vcpus"],
                              "clock_s": 0.0, "block": [], "net": [], **counters}
                             for v in vms]},
        "drift.check": {"host": name, "checked_at": "", "alerts": alerts},
        "vm.list": {"vms": vms, "foreign": []},
        "image.list": {"images": [], "partial": []},
        "audit.anchors": {"host": name, "anchors": [
            {"seq": 1, "hash": "0" * 64, "digest": "0" * 64, "at": ""}]},
        "agent.manifest": {"host": name, "version": VERSION, "root": "/usr/lib/ppec",
                           "files": files, "digest": digest, "boot_id": f"boot-{i}",
                           "pid": 1000 + i, "files_changed": [],
                           "release": {"current": digest, "previous": "", "failed": []}},
    }


# What changes per call: the clock fields real agents fill in.
_TIMED = {"ping": "time", "host.snapshot": "taken_at", "vm.stats": "taken_at"}
ANSWERED = frozenset(host_answers(SimSettings(1, Path("/")), 0))


async def _serve_connection(answers: dict[str, Any], settings: SimSettings,
                            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                            ) -> None:
    try:
        while line := await reader.readline():
            try:
                message = protocol.decode(line.rstrip(b"\n"))
                msg_id, method = message.get("id"), message.get("method")
                if method not in answers:
                    reply = protocol.reply_error(msg_id, "UNKNOWN_METHOD",
                                                 f"the simulated agent has no {method}")
                else:
                    result = answers[method]
                    if method in _TIMED:
                        result = {**result, _TIMED[method]: time.time()}
                    reply = protocol.reply_ok(msg_id, result)
            except PpecError as e:
                reply = protocol.reply_error(None, e.code, e.message)
            if settings.latency_ms:
                await asyncio.sleep(settings.latency_ms / 1000)
            writer.write(protocol.encode(reply))
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _serve(settings: SimSettings, indexes: range, ready: Path) -> None:
    servers = []
    for i in indexes:
        if settings.failing(i):
            continue
        answers = host_answers(settings, i)
        path = settings.socket(i)
        path.unlink(missing_ok=True)

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter,
                         answers: dict[str, Any] = answers) -> None:
            await _serve_connection(answers, settings, r, w)
        servers.append(await asyncio.start_unix_server(handle, path=str(path),
                                                       limit=protocol.MAX_LINE, backlog=1024))
    ready.write_text(str(len(servers)))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    parent = os.getppid()
    while not stop.is_set():   # a parent killed without cleanup takes its fleet along
        if os.getppid() != parent:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    for s in servers:
        s.close()


def serve_share(settings: SimSettings, part: int, parts: int) -> None:
    """Serve every ``parts``-th host starting at ``part`` until SIGTERM (one process)."""
    ready = settings.root / f".ready-{part}"
    asyncio.run(_serve(settings, range(part, settings.count, parts), ready))


class SimFleet:
    """``parts`` processes serving ``settings.count`` fake agents; a context manager."""

    def __init__(self, settings: SimSettings, parts: int = 4) -> None:
        self.settings = settings
        self.parts = max(1, min(parts, settings.count))
        self.pids: list[int] = []

    def __enter__(self) -> SimFleet:
        self.settings.root.mkdir(parents=True, exist_ok=True)
        for part in range(self.parts):
            (self.settings.root / f".ready-{part}").unlink(missing_ok=True)
            pid = os.fork()
            if pid == 0:   # the child serves its share, then leaves without cleanup
                code = 0
                try:
                    serve_share(self.settings, part, self.parts)
                except BaseException:
                    code = 1
                os._exit(code)
            self.pids.append(pid)
        deadline = time.monotonic() + 120
        while not all((self.settings.root / f".ready-{p}").exists() for p in range(self.parts)):
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("simulated fleet did not come up within 120 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.pids.clear()

    def healthy(self) -> list[str]:
        return [self.settings.name(i) for i in range(self.settings.count)
                if not self.settings.failing(i)]

    def failing(self) -> list[str]:
        return [self.settings.name(i) for i in range(self.settings.count)
                if self.settings.failing(i)]


def add_to_store(settings: SimSettings, store: Any) -> None:
    """Every simulated host in the inventory, reached as ``local`` on its socket."""
    from ppec.operator.store import Host
    racks = max(1, settings.count // 40)
    with store.transaction() as db:
        for i in range(settings.count):
            h = Host(settings.name(i), "local", socket=str(settings.socket(i)),
                     region=f"r{i % 3}", rack=f"rack{i % racks:03d}",
                     power_domain=f"pd{i % 8}")
            db.execute("INSERT INTO hosts (name, address, port, username, identity, socket, "
                       "region, rack, power_domain, vrf, cost, tags, drained, added_at, "
                       "power_idle_w, power_max_w) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                       "?, ?, ?, ?, ?)", (h.name, h.address, h.port, h.username, h.identity,
                                          h.socket, h.region, h.rack, h.power_domain, h.vrf,
                                          h.cost, "[]", 0, h.added_at, 0.0, 0.0))


if __name__ == "__main__":   # python -m tests.sim.fleet COUNT ROOT: serve until Ctrl-C
    sim = SimSettings(int(sys.argv[1]), Path(sys.argv[2]))
    with SimFleet(sim):
        print(f"{sim.count} simulated agents under {sim.root}", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
