"""Real parts for the service's tests: `ppec serve` as a subprocess, a fleet whose agents
count the calls they get, and real HTTP receivers for webhooks."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sqlite3
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import tomli_w

from tests.e2e.fleet import SimHost
from tests.realparts import PPEC, Agent, Cli, Sshd, free_port, unique, wait_until


class CallCounter:
    """Sits on the agent's socket path in front of the real agent and counts requests
    per caller. The caller is told apart by the command it asked sshd for (the forced
    command runs instead, and sshd passes the asked one on as SSH_ORIGINAL_COMMAND), so
    two services with different `[ssh] command` are counted apart, from outside both."""

    def __init__(self, path: Path, agent_socket: Path) -> None:
        self.path, self.agent_socket = path, agent_socket
        self.calls: Counter[str] = Counter()
        self.connections: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_UNIX)
        self._sock.bind(str(path))
        self._sock.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _caller(self, conn: socket.socket) -> str:
        import struct
        pid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                  12))[0]
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return "?"
        for item in env:
            if item.startswith(b"SSH_ORIGINAL_COMMAND="):
                return item.split(b"=", 1)[1].decode().split()[-1]
        return "-"

    def _relay(self, conn: socket.socket) -> None:
        who = self._caller(conn)
        with self._lock:
            self.connections[who] += 1
        agent = socket.socket(socket.AF_UNIX)
        try:
            agent.connect(str(self.agent_socket))
        except OSError:
            conn.close()
            return

        def back() -> None:
            with contextlib.suppress(OSError):
                while data := agent.recv(65536):
                    conn.sendall(data)
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)

        threading.Thread(target=back, daemon=True).start()
        with contextlib.suppress(OSError):
            while data := conn.recv(65536):
                with self._lock:
                    self.calls[who] += data.count(b"\n")
                agent.sendall(data)
        with contextlib.suppress(OSError):
            agent.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._sock.close()


@dataclass
class Host(SimHost):
    counter: CallCounter | None = None

    def down(self) -> None:
        """The host goes away: its sshd and every session it was serving."""
        if self.sshd.proc is None:
            return
        kids = psutil.Process(self.sshd.proc.pid).children(recursive=True)
        self.sshd.stop()
        for k in kids:
            with contextlib.suppress(psutil.NoSuchProcess):
                k.kill()

    def up(self) -> None:
        self.sshd.start()   # same port and host key: known_hosts still matches

    def accepted(self) -> int:
        """SSH logins sshd has accepted (its own log): one per connection opened."""
        return (self.sshd.root / "sshd.log").read_text().count("Accepted publickey")


def make_fleet(root: Path, count: int, uri: str, operator_pub: str,
               agent_extra: dict[str, Any] | None = None,
               env: dict[str, dict[str, str]] | None = None) -> list[Host]:
    hosts = []
    for i in range(count):
        name = f"h{i + 1}"
        agent = Agent(root / name / "agent", host=unique(name), libvirt_uri=uri,
                      extra=dict(agent_extra or {}),
                      env=(env or {}).get(name, {})).start()
        counter = CallCounter(root / name / "count.sock", agent.socket)
        sshd = Sshd(root / name / "sshd", address=f"127.0.0.{11 + i}",
                    agent_socket=counter.path, operator_pubkey=operator_pub).start()
        hosts.append(Host(name, agent, sshd, counter))
    return hosts


def stop_fleet(hosts: list[Host]) -> None:
    for h in hosts:
        h.sshd.stop()
        h.agent.kill()
        if h.counter:
            h.counter.close()


@dataclass
class Service:
    """A real `ppec serve` process; its JSON log lines are read back from a file."""

    cli: Cli
    root: Path
    serve: dict[str, Any] = field(default_factory=dict)
    tag: str = "A"
    db: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.root / f"serve-{self.tag}.log"

    def env(self) -> dict[str, str]:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / f"config-{self.tag}.toml"
        config.write_text(tomli_w.dumps({"serve": self.serve, "ssh": {
            "command": f"ppec-agent proxy {self.tag}", "connect_timeout": 5}}))
        env = {**self.cli.env, "PPEC_CONFIG": str(config)}
        if self.db:
            env["PPEC_DB"] = self.db
        return env

    def start(self, *args: str) -> Service:
        env = self.env()
        if "--listen" not in args:   # a port of its own: several services run at once
            args = (*args, "--listen", "127.0.0.1:0")
        log = open(self.log_path, "ab")  # noqa: SIM115 -- lives with the process
        self.proc = subprocess.Popen([PPEC, "serve", *args], env=env,
                                     stdout=subprocess.DEVNULL, stderr=log)
        return self

    def once(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PPEC, "serve", "--once", *args], env=self.env(),
                              capture_output=True, text=True, timeout=300, check=False)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_text().splitlines():
            record = json.loads(line)   # every line is JSON, or this fails the test
            if name is None or record["event"] == name:
                out.append(record)
        return out

    def http_port(self, timeout: float = 60) -> int:
        wait_until(lambda: self.events("http"), timeout, "the HTTP server")
        return int(self.events("http")[0]["listen"].rsplit(":", 1)[1])

    def rounds(self, job: str = "snapshots") -> list[dict[str, Any]]:
        return [e for e in self.events("round_done") if e["job"] == job]

    def wait_rounds(self, n: int, job: str = "snapshots", timeout: float = 120) -> None:
        wait_until(lambda: len(self.rounds(job)) >= n, timeout, f"{n} {job} rounds")

    def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGKILL)


def statuses(db: Path) -> dict[str, tuple[str, int, float | None]]:
    """host -> (state, consecutive failures, last ok), read with sqlite3."""
    with contextlib.closing(sqlite3.connect(db)) as c:
        return {h: (s, f, ok) for h, s, f, ok in
                c.execute("SELECT host, state, failures, last_ok FROM host_status")}


def snapshot_times(db: Path) -> dict[str, float]:
    with contextlib.closing(sqlite3.connect(db)) as c:
        return dict(c.execute("SELECT host, taken_at FROM snapshots"))


class Receiver:
    """A real HTTP server for webhooks: records each JSON body; ``hang`` never answers."""

    def __init__(self, hang: bool = False) -> None:
        self.got: list[dict[str, Any]] = []
        self.hits = 0
        self._release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.hits += 1
                if hang:
                    outer._release.wait()
                    return
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.got.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port("127.0.0.1")), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()


def refused_url() -> str:
    """An address where nothing listens: connections are refused."""
    return f"http://127.0.0.1:{free_port('127.0.0.1')}/hook"


def add_hosts(cli: Cli, hosts: list[Host], key: Path) -> None:
    for h in hosts:
        cli.ok(*h.add_args(key), "--accept-new-host-key")

