"""HA anti-affinity under concurrency, against five real agents behind real sshd."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.e2e.fleet import make_fleet
from tests.realparts import TEST_NODE_URI, Cli, make_key


def test_twenty_concurrent_creates_of_one_ha_group_never_share_a_host(
        cli: Cli, tmp_path: Path, sshd_ready: None) -> None:
    key = tmp_path / "operator_ed25519"
    hosts = make_fleet(tmp_path / "fleet", 5, TEST_NODE_URI, make_key(key))
    try:
        for h in hosts:
            cli.ok(*h.add_args(key), "--accept-new-host-key")

        def create(i: int) -> subprocess.CompletedProcess[str]:
            return cli.run("vm", "create", f"web-{i:02d}", "--flavor", "tiny",
                           "--ha-group", "g", "--spread", "host", "-o", "json")

        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(create, range(20)))
        made = [json.loads(r.stdout) for r in results if r.returncode == 0]
        refused = [r for r in results if r.returncode != 0]
        assert len(made) == 5, [r.stderr for r in refused]
        assert sorted(v["host"] for v in made) == ["h1", "h2", "h3", "h4", "h5"]
        for r in refused:
            assert r.returncode == 3, r.stderr
            err = json.loads(r.stderr)["error"]
            assert err["code"] == "NO_CAPACITY"
            for h in ("h1", "h2", "h3", "h4", "h5"):
                # Twenty processes doing 100 SSH handshakes on two cores: a host may also
                # be named as not answering in time, which is just as true.
                assert f"{h}: HA group g already has web-" in err["message"] or \
                    f"{h}: unreachable: " in err["message"], err["message"]
        # Checked on the hosts themselves: each ledger holds exactly one VM.
        for h in hosts:
            with contextlib.closing(sqlite3.connect(h.agent.ledger)) as db:
                assert db.execute("SELECT count(*) FROM vms").fetchone()[0] == 1
        assert len(cli.store_vms()) == 5
        # A sixth, later, sequential create is refused the same way.
        late = cli.run("vm", "create", "web-late", "--flavor", "tiny", "--ha-group", "g")
        assert late.returncode == 3 and "HA group g already has" in late.stderr
        # The group's spread level is fixed by its first member.
        other = cli.run("vm", "create", "web-rack", "--flavor", "tiny", "--ha-group", "g",
                        "--spread", "rack")
        assert other.returncode == 2 and "HA group g spreads by host" in other.stderr
    finally:
        for h in hosts:
            h.sshd.stop()
            h.agent.kill()
