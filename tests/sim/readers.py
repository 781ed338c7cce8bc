"""Many concurrent HTTP readers on keep-alive connections, as the web UI's refresh makes
them: for bench/scale.py and the load test (tests/service/test_load.py)."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

from tests.realparts import free_port


@dataclass
class Seen:
    latencies: list[float] = field(default_factory=list)   # seconds, answered requests
    failures: list[str] = field(default_factory=list)      # what went wrong, per request

    def percentile(self, q: float) -> float:
        """The q-th percentile latency in milliseconds (nan when nothing was answered)."""
        lat = sorted(self.latencies)
        if not lat:
            return float("nan")
        return lat[min(len(lat) - 1, int(len(lat) * q))] * 1000


async def _reader(path: str, port: int, until: float, seen: Seen, every: float) -> None:
    """One reader: a page every ``every`` seconds, starting at a random moment so readers
    do not march; a status other than 200, or a broken connection, is a failure."""
    await asyncio.sleep(random.uniform(0, every))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        seen.failures.append(f"connect: {e}")
        return
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    try:
        while time.monotonic() < until:
            t = time.perf_counter()
            writer.write(request)
            await writer.drain()
            status = (await reader.readline()).split(b" ", 2)
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            took = time.perf_counter() - t
            if len(status) < 2 or status[1] != b"200":
                seen.failures.append(f"status {status!r}")
            else:
                seen.latencies.append(took)
            await asyncio.sleep(max(0.0, every - took))
    except (OSError, asyncio.IncompleteReadError) as e:
        seen.failures.append(f"{type(e).__name__}: {e}")
    finally:
        writer.close()


def read_for(port: int, path: str = "/api/v1/hosts?limit=50", readers: int = 1000,
             seconds: float = 15.0, every: float = 3.0) -> Seen:
    """``readers`` concurrent readers of ``path`` for ``seconds``."""
    seen = Seen()

    async def run() -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(*(_reader(path, port, until, seen, every)
                               for _ in range(readers)))
    asyncio.run(run())
    return seen


def start_http(db: str, env: dict[str, str] | None = None
               ) -> tuple[subprocess.Popen[bytes], int]:
    """The HTTP side in a process of its own (as `ppec serve` runs it: not sharing a GIL
    with the readers), on a free loopback port; returns once it answers."""
    port = free_port("127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "ppec.service.http", "--db", db,
                             "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=2)
            return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the HTTP service did not come up")
