"""uvicorn in a background thread, so ``ppec serve`` keeps its main loop (jobs, signals)
and stops the HTTP side with ``handle.stop()``."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from ppec.core.errors import PpecError


class ListenFailed(PpecError):
    code = "LISTEN_FAILED"


@dataclass
class Handle:
    server: uvicorn.Server
    thread: threading.Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let requests in flight finish (up to ``timeout``), join."""
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout)

    def alive(self) -> bool:
        return self.thread.is_alive()


def start(app: FastAPI, host: str, port: int, *, timeout: float = 30.0,
          log_level: str = "warning") -> Handle:
    """Serve ``app`` on host:port (port 0: any free one, see ``handle.port``) from a
    daemon thread; returns once it listens, or raises ListenFailed."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            access_log=False, lifespan="on", server_header=False,
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    # uvicorn installs signal handlers only on the main thread: the caller keeps its own.
    thread = threading.Thread(target=server.run, name="ppec-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ListenFailed(f"cannot listen on {host}:{port} (in use, or not an address "
                               f"of this machine?)")
        time.sleep(0.01)
    bound = port
    for s in getattr(server, "servers", []):
        for sock in s.sockets:
            bound = int(sock.getsockname()[1])
    return Handle(server, thread, host, bound)
