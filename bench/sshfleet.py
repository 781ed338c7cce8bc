"""What the SSH benchmarks share: a real fleet of sshd hosts in front of agents on
libvirt's test driver, added to a fresh operator store, and the `ssh HOST true` fan-out
they are measured against."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.fleet import SimHost, make_fleet
from tests.realparts import TEST_NODE_URI, Cli, make_key


@dataclass
class Fleet:
    root: Path
    key: Path
    hosts: list[SimHost]
    cli: Cli

    @property
    def known_hosts(self) -> Path:
        return Path(self.cli.env["XDG_CONFIG_HOME"]) / "ppec" / "known_hosts"

    def ssh_fanout(self) -> float:
        """Seconds for `ssh -i KEY root@HOST true` to every host at once."""
        def one(h: SimHost) -> None:
            subprocess.run(["ssh", "-i", str(self.key), "-p", str(h.sshd.port),
                            "-o", f"UserKnownHostsFile={self.known_hosts}",
                            "-o", "BatchMode=yes", f"root@{h.sshd.address}", "true"],
                           capture_output=True, check=True, timeout=60)
        t = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(self.hosts)) as pool:
            list(pool.map(one, self.hosts))
        return time.perf_counter() - t


@contextmanager
def sshd_fleet(count: int, prefix: str) -> Iterator[Fleet]:
    """``count`` sshd hosts, each in the operator store (host keys accepted once)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    key = root / "operator_ed25519"
    hosts = make_fleet(root / "fleet", count, TEST_NODE_URI, make_key(key))
    cli = Cli(root / "operator")
    try:
        for h in hosts:
            cli.ok(*h.add_args(key), "--accept-new-host-key")
        yield Fleet(root, key, hosts, cli)
    finally:
        for h in hosts:
            h.sshd.stop()
            h.agent.kill()
