"""A PostgreSQL server of the test's own, on a loopback port, that the test may restart
and whose roles it may limit (the shared server of scripts/setup.sh serves every other
test, and its role ppec may not create roles).

Made with Debian's own binaries (``/usr/lib/postgresql/N/bin``), run as the ``postgres``
user (initdb refuses root), in a directory under /var/tmp that the test removes.
"""

from __future__ import annotations

import glob
import shutil
import socket
import subprocess
from pathlib import Path

from tests.realparts import unique


def bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePg:
    def __init__(self, bindir: Path) -> None:
        self.bin = bindir
        self.dir = Path("/var/tmp") / unique("ppec-pg")
        self.port = free_port()
        self.admin = f"postgresql://admin@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *argv: str, timeout: float = 120) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True,
                       capture_output=True, text=True, timeout=timeout)

    def start(self) -> PrivatePg:
        self.dir.mkdir(mode=0o700)
        shutil.chown(self.dir, "postgres", "postgres")
        # trust on loopback: the server lives for one test, on a port nothing else knows.
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.dir / "data"), "-U",
                          "admin", "-A", "trust", "--no-sync")
        self._ctl("start")
        return self

    def _ctl(self, action: str, *extra: str) -> None:
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                f"-c fsync=off -c max_connections=100")
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-w",
                          "-l", str(self.dir / "log"), "-o", opts, *extra, action)

    def restart(self) -> None:
        """A fast restart: sessions are terminated, their open transactions rolled back."""
        self._ctl("restart", "-m", "fast")

    def stop(self) -> None:
        try:
            self._ctl("stop", "-m", "immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def sql(self, *statements: str) -> None:
        import psycopg
        with psycopg.connect(self.admin, autocommit=True) as db:
            for s in statements:
                db.execute(s)

    def url(self, role: str, password: str, db: str) -> str:
        return f"postgresql://{role}:{password}@127.0.0.1:{self.port}/{db}"

    def admin_on(self, db: str) -> str:
        """The superuser (trust: no password) on database ``db``."""
        return f"postgresql://admin@127.0.0.1:{self.port}/{db}"
