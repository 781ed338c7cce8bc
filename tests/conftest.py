from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.migparts import Peer, peer_reason, start_peer, stop_peer
from tests.netparts import Lan, lan, net_reason
from tests.realparts import (
    QEMU_SCRATCH,
    Agent,
    Cli,
    clean_domains,
    qemu_reason,
    sshd_reason,
    unique,
)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "operator")


@pytest.fixture
def test_agent(tmp_path: Path) -> Iterator[Agent]:
    """An agent on libvirt's test driver (a clean 16-CPU, 64 GiB host)."""
    agent = Agent(tmp_path / "agent", host="t1").start()
    yield agent
    agent.kill()


@pytest.fixture
def blue_lan() -> Iterator[Lan]:
    """A test LAN (bridge without a host address, gateway 10.93.0.1 in a namespace)."""
    reason = net_reason()
    if reason:
        pytest.skip(f"Linux bridges and namespaces unavailable: {reason}")
    with lan("10.93.0.1/24") as net:
        yield net


@pytest.fixture
def net_agent(tmp_path: Path, blue_lan: Lan) -> Iterator[Agent]:
    """A test-driver agent whose VRF blue is the real bridge of ``blue_lan``."""
    agent = Agent(tmp_path / "agent", host="t1",
                  extra={"networks": {"blue": {"bridge": blue_lan.bridge}}}).start()
    yield agent
    agent.kill()


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Where this test's agent keeps base images (the agent makes the dir)."""
    return tmp_path / "images"


@pytest.fixture
def image_agent(tmp_path: Path, images: Path) -> Iterator[Callable[..., Agent]]:
    """Starts this test's agent (libvirt's test driver, host t1) with its base images in
    ``images`` and any more config keys; every one started is stopped at the end."""
    started: list[Agent] = []

    def start(**extra: Any) -> Agent:
        agent = Agent(tmp_path / "agent", host="t1",
                      extra={"image_dir": str(images), **extra}).start()
        started.append(agent)
        return agent
    yield start
    for agent in started:
        agent.kill()


@pytest.fixture(scope="session")
def qemu_ready() -> None:
    reason = qemu_reason()
    if reason:
        pytest.skip(f"real libvirtd + QEMU unavailable: {reason}")


@pytest.fixture(scope="session")
def sshd_ready() -> None:
    reason = sshd_reason()
    if reason:
        pytest.skip(f"real sshd unavailable: {reason}")


@pytest.fixture
def qemu_dir(qemu_ready: None) -> Iterator[Path]:
    """A scratch dir QEMU (as libvirt-qemu) can reach; domains built there die with it."""
    QEMU_SCRATCH.mkdir(mode=0o711, exist_ok=True)
    QEMU_SCRATCH.chmod(0o711)
    root = QEMU_SCRATCH / unique("t")
    root.mkdir(mode=0o711)
    yield root
    clean_domains(root)   # anything a failed test left in libvirt that lives in this dir
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def qemu_agent(qemu_dir: Path) -> Iterator[Agent]:
    """An agent on the real libvirtd + QEMU of this machine."""
    # 20 tiny shared VMs on a 2-CPU machine is 10 vCPUs per CPU: allow it here.
    agent = Agent(qemu_dir / "agent", host=unique("q"), libvirt_uri="qemu:///system",
                  extra={"cpu_overcommit": 12.0}).start()
    yield agent
    agent.kill()


@pytest.fixture(scope="session")
def guest(qemu_ready: None) -> Path:
    """The tiny test guest (kernel + busybox initramfs), built from Debian packages."""
    build = Path(__file__).parent / "guest" / "build.sh"
    done = subprocess.run([str(build)], capture_output=True, text=True, check=False,
                          timeout=600)
    if done.returncode != 0:
        pytest.skip(f"the test guest could not be built: {done.stderr.strip()[-500:]}")
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def guest_agent(qemu_dir: Path, guest: Path) -> Iterator[Agent]:
    """An agent on real libvirtd + QEMU whose image dir holds the test guest. TCG: this
    machine's nested KVM starts domains but hangs a Linux guest (DESIGN.md)."""
    agent = Agent(qemu_dir / "agent", host=unique("g"), libvirt_uri="qemu:///system",
                  extra={"cpu_overcommit": 12.0, "image_dir": str(guest),
                         "domain_type": "qemu"}).start()
    yield agent
    agent.kill()


PG_ADMIN = "postgresql://ppec:ppec@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def pg_ready() -> str:
    """The loopback PostgreSQL that scripts/setup.sh starts, as the role ppec (CREATEDB)."""
    try:
        import psycopg
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5):
            pass
    except Exception as e:   # any failure means no usable server: say which
        pytest.skip(f"PostgreSQL unavailable at 127.0.0.1:5432 ({e}); scripts/setup.sh "
                    f"starts it")
    return PG_ADMIN


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each store test runs on both backends: a SQLite file, and a fresh PostgreSQL DB."""
    if request.param == "sqlite":
        yield str(tmp_path / "ppec.db")
        return
    request.getfixturevalue("pg_ready")
    with fresh_pg_database("ppec_test") as url:
        yield url


@contextlib.contextmanager
def fresh_pg_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the loopback server, dropped afterwards."""
    import psycopg
    name = unique(prefix).replace("-", "_")
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://ppec:ppec@127.0.0.1:5432/{name}"
    finally:
        drop_pg_database(name)


def drop_pg_database(name: str) -> None:
    """Drop a test database that sessions of ours may still hold.

    Not `WITH (FORCE)`: that also tries to terminate an autovacuum worker busy in the
    database, which the role ppec may not signal, so the drop failed whenever autovacuum
    happened to visit (seen once in CI). We end our own sessions, then a plain DROP,
    which stops autovacuum workers itself and waits for them."""
    import psycopg
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        for attempt in range(50):
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND usename = current_user "
                          "AND pid <> pg_backend_pid()", (name,))
            try:
                admin.execute(f"DROP DATABASE IF EXISTS {name}")
                return
            except psycopg.errors.ObjectInUse:   # a session not yet gone: again
                if attempt == 49:
                    raise
                time.sleep(0.1)


def direct(url: str) -> Any:
    """A plain DB-API connection to the store, bypassing ppec (autocommit)."""
    if url.startswith("postgresql://"):
        import psycopg
        return psycopg.connect(url, autocommit=True)
    return sqlite3.connect(url, isolation_level=None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI every real part is installed, so a skip means set-up broke: fail the run."""
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        reasons = sorted({str(getattr(r, "longrepr", ""))[-160:] for r in skipped})
        print(f"\nCI: {len(skipped)} test(s) skipped; set-up should have installed every "
              f"real part:\n  " + "\n  ".join(reasons))
        session.exitstatus = 1


@pytest.fixture(scope="session")
def libvirt_peers(qemu_ready: None) -> Iterator[list[Peer]]:
    """Three more libvirtds on this machine (tests/libvirt-peer.sh), for migration:
    distinct host UUIDs, as distinct hosts have. Stopped when the session ends."""
    reason = peer_reason()
    if reason:
        pytest.skip(f"extra libvirtds unavailable: {reason}")
    names = [f"ppec-mp{i}" for i in (1, 2, 3)]
    peers = [start_peer(name, i) for i, name in enumerate(names, start=1)]
    yield peers
    for name in names:
        stop_peer(name)
