"""`ppec vm create` on fresh stored snapshots asks only the chosen host, over real sshd.

Each host's sshd logs one "Accepted publickey" line per SSH connection, and one ppec
process opens at most one connection per host: counting those lines counts the hosts a
command talked to, without touching the agents."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.fleet import SimHost, make_fleet
from tests.realparts import TEST_NODE_URI, Cli, make_key, wait_until


def _sessions(h: SimHost) -> int:
    log = h.sshd.root / "sshd.log"
    return log.read_text(errors="replace").count("Accepted publickey") if log.exists() else 0


def _config(cli: Cli, fresh_for: str) -> None:
    cli.configure(f'[placement]\nfresh_for = "{fresh_for}"\n')


def _create(cli: Cli, hosts: list[SimHost], name: str) -> tuple[str, dict[str, int]]:
    """Create ``name``; the host it went to and the new SSH sessions per host."""
    before = {h.name: _sessions(h) for h in hosts}
    doc = json.loads(cli.ok("vm", "create", name, "--flavor", "tiny", "-o", "json").stdout)
    chosen = doc["host"]
    by_name = {h.name: h for h in hosts}
    wait_until(lambda: _sessions(by_name[chosen]) > before[chosen], 10, "the chosen host's "
               "session in its sshd log")
    return chosen, {h.name: _sessions(h) - before[h.name] for h in hosts}


def test_create_after_sync_asks_only_the_chosen_host(cli: Cli, tmp_path: Path,
                                                     sshd_ready: None) -> None:
    key = tmp_path / "operator_ed25519"
    hosts = make_fleet(tmp_path / "fleet", 3, TEST_NODE_URI, make_key(key))
    try:
        for h in hosts:
            cli.ok(*h.add_args(key), "--accept-new-host-key")
        _config(cli, "10m")
        cli.ok("sync")   # what `ppec serve` does every few seconds
        chosen, new = _create(cli, hosts, "web-1")
        assert new == {h.name: int(h.name == chosen) for h in hosts}
        assert "web-1" in next(h for h in hosts if h.name == chosen).agent.ledger_rows()

        # fresh_for 0: every candidate is asked for a snapshot first, as without a service.
        _config(cli, "0s")
        chosen, new = _create(cli, hosts, "web-2")
        assert new == {h.name: 1 for h in hosts}
    finally:
        for h in hosts:
            h.sshd.stop()
            h.agent.kill()


def test_a_host_filled_behind_the_stores_back_refuses_and_the_next_is_tried(
        cli: Cli, tmp_path: Path, sshd_ready: None) -> None:
    key = tmp_path / "operator_ed25519"
    hosts = make_fleet(tmp_path / "fleet", 3, TEST_NODE_URI, make_key(key))
    other = Cli(tmp_path / "other")   # another operator, with its own store
    try:
        for h in hosts:
            # h3 costs more: placement ranks it last, so both refusals come first.
            cli.ok(*h.add_args(key), "--accept-new-host-key",
                   *(["--cost", "5"] if h.name == "h3" else []))
        _config(cli, "10m")
        cli.ok("sync")
        assert json.loads(cli.ok("place", "--cpus", "1", "--memory", "8G", "-o", "json")
                          .stdout)["hosts"][-1]["host"] == "h3"
        # After the sync, h1 and h2 fill up: our store's snapshots say they are empty.
        for h in hosts[:2]:
            other.ok(*h.add_args(key), "--accept-new-host-key")
            other.ok("vm", "create", f"big-{h.name}", "--cpus", "1", "--memory", "60G",
                     "--disk", "1G", "--host", h.name)
        doc = json.loads(cli.ok("vm", "create", "web-1", "--cpus", "1", "--memory", "8G",
                                "--disk", "1G", "-o", "json").stdout)
        assert doc["host"] == "h3" and doc["attempts"] == 3
        assert "web-1" in hosts[2].agent.ledger_rows()
        assert all("web-1" not in h.agent.ledger_rows() for h in hosts[:2])
        assert cli.store_vms() == ["web-1"]
    finally:
        for h in hosts:
            h.sshd.stop()
            h.agent.kill()
